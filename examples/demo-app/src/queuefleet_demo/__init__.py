"""Example application for queuefleet."""

__version__ = "1.0.0"
