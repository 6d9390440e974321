"""Camera backends (simulated, PySpin, replay), the camera node, recorder and ring buffer."""
