"""Embedded default data (scikit-learn's bundled digits) and small models, for offline demos."""
