"""Chrono: a self-hosted real-time crypto price oracle that runs as one Trio process."""

__version__ = "0.1.0"
