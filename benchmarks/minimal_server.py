"""The cold-start reference: a minimal `MCPServer` with one tool, on the same SDK, over stdio."""

from mcp.server import MCPServer

mcp = MCPServer("minimal")


@mcp.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    mcp.run()
