"""The gateway as an MCP client: one connection per backend, supervised."""
