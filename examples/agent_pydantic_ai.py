"""An agent framework driving smsrent over MCP: Pydantic AI, with a scripted model (no model key needed).

The agent connects to `smsrent-mcp` over stdio (sandbox: no credentials, a temporary ledger) through Pydantic AI's
`MCPToolset`. Its model is a `FunctionModel` that plays the part of an LLM: it reads the conversation so far,
including the real tool results, and decides the next step:

    list_plans(service) -> rent_number(cheapest plan_id, max_price) -> wait_for_code (again while still_waiting)
    -> a final answer with the code (or, if none comes after a few waits, refund and say so)

Give the `Agent` a real model instead of the `FunctionModel` and the same agent runs unscripted.
Needs `pip install "pydantic-ai-slim[mcp]"` (part of the test extras).

    python examples/agent_pydantic_ai.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent, RunContext
from pydantic_ai.mcp import CallToolFunc, MCPToolset
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

SERVICE = "telegram"
MAX_PRICE = "2"
MAX_WAITS = 6  # wait_for_code calls (20 s each) before giving up and refunding
TASK = f"Get me a phone number for {SERVICE} (pay at most {MAX_PRICE} USD) and tell me the verification code."


def smsrent_command() -> str:
    """The `smsrent-mcp` script installed next to this interpreter, else the one on PATH."""
    found = shutil.which("smsrent-mcp", path=str(Path(sys.executable).parent)) or shutil.which("smsrent-mcp")
    if found is None:
        raise SystemExit("smsrent-mcp is not installed: pip install -e .")
    return found


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Decide the next step from the latest tool result, the way an LLM following the tool descriptions would."""
    tools = {t.name for t in info.function_tools}
    assert {"list_plans", "rent_number", "wait_for_code"} <= tools, f"smsrent tools missing from {sorted(tools)}"

    last = messages[-1]
    results = [p for p in last.parts if isinstance(p, ToolReturnPart)] if isinstance(last, ModelRequest) else []
    if not results:  # the user's request: start by looking at what can be rented
        return call("list_plans", service=SERVICE, max_price=MAX_PRICE)

    result = results[-1]
    if result.outcome != "success":  # the server refused: tell the user instead of guessing
        return answer(f"I could not finish: {result.tool_name} failed with: {result.content}")
    content: Any = result.content  # smsrent's structured result, as a dict
    if result.tool_name == "list_plans":
        if not content["plans"]:
            return answer(f"No {SERVICE} number is available for {MAX_PRICE} USD or less. {content['next_step']}")
        cheapest = content["plans"][0]  # the server lists plans cheapest first
        return call("rent_number", plan_id=cheapest["plan_id"], max_price=MAX_PRICE)
    if result.tool_name == "rent_number":
        return call("wait_for_code", rental_id=content["rental"]["rental_id"], timeout_seconds=20)
    if result.tool_name == "wait_for_code":
        waits = sum(isinstance(p, ToolCallPart) and p.tool_name == "wait_for_code" for m in messages for p in m.parts)
        if content["outcome"] == "still_waiting" and waits < MAX_WAITS:
            return call("wait_for_code", rental_id=content["rental_id"], timeout_seconds=20)
        if "code" in content:  # left out unless a code came
            rental = rented(messages)
            return answer(
                f"Your {rental['service']} verification code is {content['code']}"
                f" (number {rental['phone']}, rental {rental['rental_id']}, {rental['price']} USD)."
            )
        if content["outcome"] == "still_waiting":  # waited long enough: give the unused number back
            return call("refund", rental_id=content["rental_id"])
        return answer(f"No code arrived: {content['next_step']}")
    if result.tool_name == "refund":
        return answer(
            f"No code arrived, so I refunded the rental ({content.get('refunded', 'an unknown amount of')} USD back)."
        )
    return answer(f"Unexpected tool result from {result.tool_name}.")


def rented(messages: list[ModelMessage]) -> Any:
    """The rental that rent_number returned earlier in the conversation."""
    results = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart) and p.tool_name == "rent_number"]
    return results[-1].content["rental"]


def call(tool: str, **arguments: Any) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart(tool, arguments)])


def answer(text: str) -> ModelResponse:
    return ModelResponse(parts=[TextPart(text)])


async def show_tool_call(ctx: RunContext[Any], call_tool: CallToolFunc, name: str, args: dict[str, Any]) -> Any:
    """Print each MCP tool call as the agent makes it, and a short view of what came back."""
    print(f"-> {name}({json.dumps(args)})")
    try:
        result = await call_tool(name, args)
    except Exception as err:  # a tool error: the agent hands it to the model as a failed call
        print(f"<- {name} failed: {err}")
        raise
    print(f"<- {name}: {summary(name, result)}")
    return result


def summary(tool: str, content: Any) -> str:
    if not isinstance(content, dict):
        return str(content)[:160]
    if tool == "list_plans" and content["plans"]:
        return f"{content['count']} plans, cheapest {content['plans'][0]['plan_id']} at {content['plans'][0]['price']}"
    if tool == "rent_number":
        return f"rented {content['rental']['phone']} as {content['rental']['rental_id']}"
    if tool == "wait_for_code":
        return f"{content['outcome']} after {content['waited_seconds']} s, code {content.get('code')}"
    return json.dumps(content)[:160]


async def show_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"   ... {progress:4.1f}/{total or 0:.0f} s  {message or ''}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTSMS_", "GETATEXT_", "SMSRENT_"))}
        env |= {"SMSRENT_SANDBOX": "1", "SMSRENT_DATA_DIR": data_dir, "SMSRENT_LOG_LEVEL": "WARNING"}
        smsrent = MCPToolset(
            StdioTransport(smsrent_command(), [], env=env, keep_alive=False),
            process_tool_call=show_tool_call,
            progress_handler=show_progress,
            tool_error_behavior="failed",  # show the model the server's error instead of retrying blindly
        )
        agent = Agent(FunctionModel(scripted_model, model_name="scripted"), toolsets=[smsrent])

        print(f"USER: {TASK}\n")
        async with agent:  # keeps one smsrent session for the whole run
            result = await agent.run(TASK)
        print(f"\nAGENT: {result.output}")

        found = re.search(r"verification code is (\w+)", result.output)
        if found is None:
            raise SystemExit("the agent did not report a code")
        print(f"\nCODE {found[1]}")


if __name__ == "__main__":
    anyio.run(main)
