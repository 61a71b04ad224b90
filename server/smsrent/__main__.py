"""`python -m smsrent`: the same as the `smsrent-mcp` command."""

from smsrent.cli import main

if __name__ == "__main__":
    main()
