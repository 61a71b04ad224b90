"""What the owner sees: metrics, traces, the spend report and the dashboard's figures.

`tracing` is a leaf every layer may use (it needs only the OpenTelemetry API); the other modules read the
service layer and never import MCP.
"""
