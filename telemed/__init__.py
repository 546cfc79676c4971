"""Telemed: a self-hostable server for free online medical consultations."""

__version__ = "0.1.0"
