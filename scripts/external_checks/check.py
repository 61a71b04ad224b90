"""Assertions for scripts/external_checks.sh: reads what the official tools printed or wrote, stdlib only.

Usage: python3 check.py <command> [args...]; exit 0 = the check passed, 1 = it failed (the reason on stderr).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPECTED_TOOLS = (
    "get_balance",
    "list_plans",
    "rent_number",
    "wait_for_code",
    "refund",
    "wake_up",
    "list_rentals",
    "get_messages",
    "extend_rental",
    "set_auto_renew",
    "finish_rental",
)
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"

# Why each baselined conformance scenario may fail: a regex that every failing check's message (or the tool result
# text the check saw) must match. A baselined scenario failing for any other reason is reported as a server bug.
FIXTURE_TOOL = r"Unknown tool: (test_\w+|json_schema_2020_12_tool)"
BASELINE_REASONS: dict[str, str] = {
    "tools-call-with-logging": FIXTURE_TOOL + r"|No log notifications received",
    "tools-call-image": FIXTURE_TOOL + r"|No image content found",
    "tools-call-audio": FIXTURE_TOOL + r"|No audio content found",
    "tools-call-embedded-resource": FIXTURE_TOOL + r"|No resource content found",
    "tools-call-mixed-content": FIXTURE_TOOL + r"|Expected multiple content items|Missing \w+ content",
    "tools-call-with-progress": FIXTURE_TOOL,
    "tools-call-sampling": FIXTURE_TOOL,
    "tools-call-elicitation": FIXTURE_TOOL,
    "elicitation-sep1034-defaults": r"Server did not request elicitation from client",
    "elicitation-sep1330-enums": r"Server did not request elicitation from client",
    "resources-read-text": r"Unknown resource: test://static-text",
    "resources-read-binary": r"Unknown resource: test://static-binary",
    "resources-templates-read": r"Unknown resource: test://template/",
    "prompts-get-simple": r"Unknown prompt: test_simple_prompt",
    "prompts-get-with-args": r"Unknown prompt: test_prompt_with_arguments",
    "prompts-get-embedded-resource": r"Unknown prompt: test_prompt_with_embedded_resource",
    "prompts-get-with-image": r"Unknown prompt: test_prompt_with_image",
    "json-schema-2020-12": r"Tool 'json_schema_2020_12_tool' not found",
    "server-sse-polling": FIXTURE_TOOL,
}
# Scenarios that call a fixture tool and accept any isError result: a pass here proves nothing about smsrent.
SHALLOW_PASSES = {"tools-call-simple-text", "tools-call-error"}


class CheckFailed(Exception):
    pass


def fail(message: str) -> None:
    raise CheckFailed(message)


def load(path: str) -> Any:
    """Inspector output: the result as JSON, or {"result": ...} with --format json."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckFailed(f"{path} is not JSON ({err}): {text[:300]!r}") from err
    if isinstance(data, dict) and set(data) == {"result"}:
        return data["result"]
    return data


def tool_names(path: str) -> list[str]:
    return [tool["name"] for tool in load(path)["tools"]]


def cmd_tools(path: str, *expected: str) -> None:
    names = tool_names(path)
    missing = [name for name in (expected or EXPECTED_TOOLS) if name not in names]
    if missing:
        fail(f"tools/list lacks {missing}; got {names}")
    for tool in load(path)["tools"]:
        if "inputSchema" not in tool or "description" not in tool:
            fail(f"tool {tool['name']} has no inputSchema or description")
    print(f"{len(names)} tools: {', '.join(names)}")


def cmd_tools_only(path: str, *expected: str) -> None:
    """tools/list names exactly `expected` (a credential's scopes leave the other tools out)."""
    names = tool_names(path)
    if sorted(names) != sorted(expected):
        fail(f"tools/list should name exactly {sorted(expected)}; got {sorted(names)}")
    print(f"{len(names)} tools, as the scopes allow: {', '.join(names)}")


def cmd_manifest_tools(manifest: str, path: str) -> None:
    declared = {tool["name"] for tool in json.loads(Path(manifest).read_text()).get("tools", [])}
    served = set(tool_names(path))
    if declared != served:
        fail(
            f"manifest.json tools differ from tools/list: only in manifest {sorted(declared - served)},"
            f" only served {sorted(served - declared)}"
        )
    print(f"manifest.json declares the same {len(served)} tools the server lists")


def cmd_balance(path: str, era: str = "legacy") -> None:
    result = load(path)
    if result.get("isError") is not False:
        fail(f"get_balance: isError is {result.get('isError')!r}: {json.dumps(result)[:400]}")
    structured = result.get("structuredContent")
    if not isinstance(structured, dict) or not structured.get("balances"):
        fail(f"get_balance: no structuredContent.balances: {json.dumps(result)[:400]}")
    if structured.get("sandbox") is not True or structured.get("currency") != "USD":
        fail(f"get_balance: not a sandbox answer in USD: {structured}")
    for balance in structured["balances"]:
        if set(balance) != {"provider", "amount"}:
            fail(f"get_balance: unexpected balance entry {balance}")
    if not result.get("content") or result["content"][0].get("type") != "text":
        fail("get_balance: no text content beside the structured content")
    if json.loads(result["content"][0]["text"]) != structured:
        fail("get_balance: the text content is not the structured content")
    check_era(result, era)
    shown = ", ".join(f"{b['provider']} {b['amount']} {structured['currency']}" for b in structured["balances"])
    print(f"isError=false, balances: {shown} (sandbox), unavailable: {structured.get('unavailable')}")


def check_era(result: dict[str, Any], era: str) -> None:
    """The 2026-07-28 era stamps every result with _meta serverInfo; the 2025 era does not."""
    stamped = SERVER_INFO_META in (result.get("_meta") or {})
    if era == "modern" and not stamped:
        fail(f"expected a 2026-era result (_meta.{SERVER_INFO_META}); got keys {sorted(result)}")
    if era == "legacy" and stamped:
        fail("expected a 2025-era result, but it carries the 2026-era serverInfo stamp")


def cmd_resource(path: str, uri: str, era: str = "legacy") -> None:
    result = load(path)
    if not result.get("contents"):
        fail(f"resources/read {uri}: no contents")
    first = result["contents"][0]
    if first.get("uri") != uri or first.get("mimeType") != "application/json":
        fail(f"resources/read {uri}: unexpected content {first}")
    body = json.loads(first["text"])
    if not {"rentals", "count"} <= set(body):
        fail(f"resources/read {uri}: unexpected body {body}")
    check_era(result, era)
    extra = f", ttlMs={result.get('ttlMs')}, cacheScope={result.get('cacheScope')}" if era == "modern" else ""
    print(f"{uri}: {first['text']}{extra}")


def cmd_templates(path: str, template: str) -> None:
    templates = [t["uriTemplate"] for t in load(path)["resourceTemplates"]]
    if template not in templates:
        fail(f"resources/templates/list lacks {template}: {templates}")
    print(f"templates: {', '.join(templates)}")


def cmd_prompts(path: str, name: str) -> None:
    prompts = {p["name"]: p for p in load(path)["prompts"]}
    if name not in prompts:
        fail(f"prompts/list lacks {name}: {sorted(prompts)}")
    args = [f"{a['name']}{'*' if a.get('required') else ''}" for a in prompts[name].get("arguments", [])]
    print(f"prompts: {', '.join(prompts)} ({name} args: {', '.join(args)})")


def cmd_cli_error(path: str, expected: str) -> None:
    """The Inspector CLI failed with the error code `expected` (auth_required, tool_not_found, ...)."""
    text = Path(path).read_text()
    match = re.search(r'"code"\s*:\s*"(\w+)"', text)
    code = match.group(1) if match else None
    if code != expected:
        fail(f"expected the Inspector's {expected} error, got: {text[:400]!r}")
    print(f"Inspector error code: {expected}")


def cmd_wait_http(url: str, timeout: str, pid: str, token: str = "") -> None:
    """Poll /healthz (with the bearer token, when the server has one) until it says ok (the lifespan has
    started); fail early if the server process died."""
    deadline = time.monotonic() + float(timeout)
    last = "no answer"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            fail(f"the server (pid {pid}) exited before {url} answered")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as response:
                body = json.loads(response.read())
                if body.get("status") == "ok":
                    print(f"{url}: {json.dumps(body)}")
                    return
                last = json.dumps(body)
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as err:
            last = str(err)
        time.sleep(0.2)
    fail(f"{url} did not answer status ok within {timeout}s (last: {last})")


def scenario_results(outdir: Path) -> dict[str, list[dict[str, Any]]]:
    """Scenario name -> its checks, from <outdir>/server-<scenario>-<timestamp>/checks.json."""
    results: dict[str, list[dict[str, Any]]] = {}
    for checks in sorted(outdir.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks.parent.name).removeprefix("server-")
        results[scenario] = json.loads(checks.read_text())
    return results


def baseline_entries(path: Path) -> list[str]:
    """The `server:` list of an expected-failures file (the simple YAML this project writes)."""
    entries, section = [], None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "-")):
            section = line.rstrip(":").strip()
        elif section == "server" and line.strip().startswith("- "):
            entries.append(line.strip()[2:].strip().strip("'\""))
    return entries


def reasons(checks: list[dict[str, Any]]) -> list[str]:
    """What each failing check said, including the tool result text it was looking at."""
    found = []
    for check in checks:
        if check.get("status") != "FAILURE":
            continue
        found.append(check.get("errorMessage") or check.get("name") or check.get("id", "?"))
        details = json.dumps(check.get("details") or {})
        found.extend(re.findall(r"Unknown tool: \w+", details))
    return found


def cmd_conformance(outdir: str, baseline_file: str, label: str, table: str = "table") -> None:
    """Classify every scenario of one conformance run; fail on any failure that is not an expected one."""
    results = scenario_results(Path(outdir))
    if not results:
        fail(f"no checks.json under {outdir}")
    baseline = baseline_entries(Path(baseline_file))
    unknown = [entry for entry in baseline if entry not in BASELINE_REASONS]
    if unknown:
        fail(f"{baseline_file} lists {unknown} without a known fixture reason in check.py")
    totals = {"SUCCESS": 0, "FAILURE": 0, "WARNING": 0}
    kinds = {"pass": 0, "shallow pass": 0, "fixture": 0, "unexpected": 0}
    problems: list[str] = []
    lines = [f"{'scenario':34} {'result':6} checks  note"]
    for scenario, checks in results.items():
        statuses = [c.get("status") for c in checks]
        for status in totals:
            totals[status] += statuses.count(status)
        note, kind = "", "pass"
        if "FAILURE" in statuses:
            said = reasons(checks)
            pattern = BASELINE_REASONS.get(scenario)
            matching = [r for r in said if pattern and re.search(pattern, r)]
            if scenario not in baseline:
                kind, note = "unexpected", f"NOT IN BASELINE: {'; '.join(said)}"
            elif not matching:
                kind, note = "unexpected", f"BASELINED BUT FAILED FOR ANOTHER REASON: {'; '.join(said)}"
            else:
                kind, note = "fixture", f"expected, fixture: {matching[0]}"
            if kind == "unexpected":
                problems.append(f"{scenario}: {'; '.join(said)}")
        elif scenario in SHALLOW_PASSES and "Unknown tool" in json.dumps(checks):
            kind, note = "shallow pass", "shallow pass: fixture tool missing, the check accepts the isError result"
        kinds[kind] += 1
        if "WARNING" in statuses:
            texts = [c.get("errorMessage", c.get("id")) for c in checks if c.get("status") == "WARNING"]
            note += ("; " if note else "") + "WARNING: " + "; ".join(texts)
        result = "FAIL" if "FAILURE" in statuses else ("WARN" if "WARNING" in statuses else "pass")
        counted = len(checks) - statuses.count("INFO")
        lines.append(f"{scenario:34} {result:6} {statuses.count('SUCCESS'):>2}/{counted:<3}  {note[:150]}")
    if table == "table" or problems:
        print("\n".join(lines))
    passed = kinds["pass"] + kinds["shallow pass"]
    summary = (
        f"{label}: {len(results)} scenarios: {passed} passed ({kinds['pass']} generic, {kinds['shallow pass']} shallow"
        f" fixture passes), {len(results) - passed} failed ({kinds['fixture']} fixture-specific,"
        f" {kinds['unexpected']} unexpected);"
        f" checks: {totals['SUCCESS']} passed, {totals['FAILURE']} failed, {totals['WARNING']} warnings"
    )
    print(summary)
    Path(outdir, "summary.txt").write_text(summary + "\n")
    if problems:
        fail("conformance failures that are not expected (server bugs or stale baseline):\n  " + "\n  ".join(problems))


JUNK = re.compile(
    r"(^|.*/)(\.tools|\.venv|venv|\.git|node_modules|__pycache__|\.mypy_cache|\.pytest_cache|\.ruff_cache)/"
)


def cmd_bundle(archive: str, manifest: str, extract_to: str) -> None:
    entry_point = json.loads(Path(manifest).read_text())["server"]["entry_point"]
    with zipfile.ZipFile(archive) as bundle:
        infos = bundle.infolist()
        names = [info.filename for info in infos]
        required = ["manifest.json", "pyproject.toml", entry_point]
        missing = [name for name in required if name not in names]
        if missing:
            fail(f"{archive} lacks {missing}")
        bundle.extractall(extract_to)  # before judging its contents: the run-from-bundle check uses it
        junk: dict[str, list[int]] = {}
        for info in infos:
            match = JUNK.match(info.filename)
            if match:
                count_size = junk.setdefault(match.group(0), [0, 0])
                count_size[0] += 1
                count_size[1] += info.file_size
        if junk:
            shown = ", ".join(f"{d} ({n} files, {size / 1e6:.1f} MB)" for d, (n, size) in sorted(junk.items()))
            dirs = sorted({Path(d).name + "/" for d in junk})
            fail(f"{archive} carries build/cache folders: {shown}. Add to .mcpbignore: {' '.join(dirs)}")
    size = Path(archive).stat().st_size
    print(f"{archive}: {len(names)} files, {size / 1024:.1f} kB, has {', '.join(required)}")


COMMANDS: dict[str, Callable[..., None]] = {
    "tools": cmd_tools,
    "tools-only": cmd_tools_only,
    "manifest-tools": cmd_manifest_tools,
    "balance": cmd_balance,
    "resource": cmd_resource,
    "templates": cmd_templates,
    "prompts": cmd_prompts,
    "cli-error": cmd_cli_error,
    "wait-http": cmd_wait_http,
    "conformance": cmd_conformance,
    "bundle": cmd_bundle,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: check.py {{{','.join(COMMANDS)}}} args...", file=sys.stderr)
        return 2
    try:
        COMMANDS[argv[0]](*argv[1:])
    except CheckFailed as err:
        print(f"CHECK FAILED: {err}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError, IndexError) as err:
        print(f"CHECK FAILED: unexpected output ({type(err).__name__}: {err})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
