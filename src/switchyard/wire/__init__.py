"""Bytes and JSON-RPC frames. Knows JSON-RPC 2.0, not MCP."""
