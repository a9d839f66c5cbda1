"""camera-agent: a camera under remote control over MQTT with mutual TLS."""

__version__ = "0.1.0"
