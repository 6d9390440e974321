"""Camera backends (simulated, PySpin), the camera node, recorder and ring buffer."""
