"""A stand-in for requests, vendored so the example installs offline."""
__version__ = "2.32.3"
