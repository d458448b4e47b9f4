"""Capture: hooks on the user's optimizer and on-device reductions (torch only)."""
