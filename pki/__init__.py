"""Certificate authority for camera-agent (`camera-pki`)."""
