"""Statistics on host arrays: pure numpy/scipy/statsmodels, no torch, no matplotlib."""
