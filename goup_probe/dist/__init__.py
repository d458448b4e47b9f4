"""``torch.distributed`` helpers that know nothing of the capture.

* :mod:`~goup_probe.dist.context`: rank, world size and mode; flags agreed across ranks.
* :mod:`~goup_probe.dist.layout`: which block of a DTensor each rank holds; global indices.
* :mod:`~goup_probe.dist.wire`: named float64 fields all-gathered in one collective.
"""
