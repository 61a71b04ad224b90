"""The reference: a minimal `MCPServer` with one tool, on the same SDK, over stdio (cold start) or, with
`--http PORT`, over streamable HTTP on 127.0.0.1 as `smsrent-mcp --http` serves it (throughput)."""

import argparse

from mcp.server import MCPServer

mcp = MCPServer("minimal")


@mcp.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a minimal MCP server with one tool")
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT")
    port = parser.parse_args().http
    if port is None:
        mcp.run()
    else:
        import uvicorn

        uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")
