"""Training: samples from packed data, the dual-AR training forward and loss, the Lightning module."""
