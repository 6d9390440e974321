"""rigstream: synchronized multi-camera acquisition, live pose and closed-loop control."""

__version__ = "0.1.0"
