"""Trainer integrations: callbacks that attach a probe inside Lightning and Hugging Face ``Trainer``.

Each integration is its own module and imports its framework only there, so
this package imports neither::

    from goup_probe.integrations.lightning import GoupProbe            # pip install goup_probe[lightning]
    from goup_probe.integrations.transformers import GoupProbeCallback  # pip install goup_probe[transformers]
"""

from goup_probe.integrations._common import unwrap_optimizer

__all__ = ["unwrap_optimizer"]
