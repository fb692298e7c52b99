"""Orchestration and the command-line interface of rconv."""
