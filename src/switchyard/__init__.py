"""Switchyard: an MCP gateway. One MCP server to every client, one MCP client to every backend."""

__version__ = "0.1.0"
