"""MQTT: topic names, the TLS context and the one module that talks to the broker."""
