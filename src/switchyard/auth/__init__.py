"""Inbound authentication: who is calling. No authorization decisions here."""
