"""The GO-UP update rule as a ``torch.optim.Optimizer``."""

from goup_probe.optim.goup import GOUP, MODES, goup_

__all__ = ["GOUP", "MODES", "goup_"]
