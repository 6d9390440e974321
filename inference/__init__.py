"""Pose models, engines, calibration and triangulation (arrives with the pose engine issue)."""
