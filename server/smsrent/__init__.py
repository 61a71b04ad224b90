"""smsrent: an MCP server that rents temporary phone numbers and returns SMS verification codes."""

__version__ = "0.1.0"
