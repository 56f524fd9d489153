"""The gateway as an MCP server: the faces clients connect to."""
