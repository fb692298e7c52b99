"""Orchestration and the command-line interface of rconv."""

__version__ = "0.1.0"
