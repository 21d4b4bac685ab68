"""avmon: live audio/video stream monitoring."""

__version__ = "0.1.0"
