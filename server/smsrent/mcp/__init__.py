"""The MCP layer: the app factory, tools, resources, prompt, subscriptions and transports."""
