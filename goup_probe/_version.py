"""The package version, in a module of its own: nothing imports the package face to get it."""

__version__ = "0.1.0"
