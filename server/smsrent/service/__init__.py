"""The domain services: the ledger, the money guard, rentals and code delivery (no MCP imports)."""
