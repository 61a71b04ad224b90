"""MiniSMS, a provider that exists only in the tests: its API document (`minisms-api.txt`), a tiny ASGI app that
serves it (`server`), and its adapter with its registry entry (`adapter`). It goes through the adapter contract
suite, the service flow and the MCP tools without a line of `service/` or `mcp/` knowing it."""
