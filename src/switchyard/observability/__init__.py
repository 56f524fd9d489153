"""Logging (and, later, metrics and traces)."""
