"""Provider-neutral domain: models, identifiers, errors and code extraction (no I/O, no MCP)."""
