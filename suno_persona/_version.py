"""The installed version of suno-persona."""

__version__ = "0.1.0"
