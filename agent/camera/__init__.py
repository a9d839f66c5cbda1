"""Camera backends: one module per camera stack, all behind `CameraBackend`."""
