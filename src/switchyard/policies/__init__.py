"""The policy chain: every request passes it; each link holds `next`, like ASGI middleware."""
