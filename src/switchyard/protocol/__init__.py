"""MCP meaning as pure functions: versions, codes, methods, per-era envelopes. No I/O."""
