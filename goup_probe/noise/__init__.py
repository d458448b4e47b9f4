"""Gradient noise at a fixed θ: tail index, noise scale, curvature."""
