"""Pulse streams, the FrameSet assembler and clock models."""
