"""A stand-in for Flask, vendored so the example installs offline."""
__version__ = "3.0.3"
