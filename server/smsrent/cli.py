"""`smsrent-mcp`: the server over stdio (default) or streamable HTTP (`--http`); `smsrent-mcp report` prints
spend, outcomes and delivery figures from the ledger, `smsrent-mcp audit` its audit trail; `smsrent-mcp agents
add|list|remove` edits the agents
file; `smsrent-mcp migrate` brings a PostgreSQL ledger's schema up to this release."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
from pydantic import ValidationError

from smsrent import __version__
from smsrent import agents as agents_file
from smsrent.config import Settings
from smsrent.mcp.app import App, create_app
from smsrent.observe.audit import run_audit
from smsrent.observe.report import parse_duration, run_report
from smsrent.observe.tracing import JsonFormatter, export_traces
from smsrent.service.ledger import LedgerUnusable

log = logging.getLogger("smsrent")

BANNER = (
    "smsrent: no provider credentials configured - serving the built-in SANDBOX (simulated numbers and codes,"
    " no money, no network). Set GOTSMS_API_TOKEN or GETATEXT_API_KEY to use real providers."
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smsrent-mcp", description="MCP server for renting SMS verification numbers.")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--sandbox", action="store_true", help="use the built-in sandbox even if credentials are set")
    parser.add_argument(
        "--read-only", action="store_true", help="register no tool that spends money or changes a rental"
    )
    parser.add_argument("--data-dir", help="where the ledger lives (SMSRENT_DATA_DIR)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (SMSRENT_LOG_LEVEL)")
    parser.add_argument("--version", action="version", version=f"smsrent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands (none: run the server)")
    report = commands.add_parser(
        "report",
        help="spend, purchase and rental outcomes, code delivery times",
        description="Spend by provider and agent against the budget, purchases and rentals by outcome, code delivery"
        " p50/p95 and the refund rate, from the ledger of the configured data dir.",
    )
    _ledger_view_options(report, "only this agent (`owner`: the owner's, and those from before agents)", "json")
    audit = commands.add_parser(
        "audit",
        help="the audit trail: purchases, refunds, extensions, renewal changes, refusals, failed authentications",
        description="Who did what with money, and which credentials were refused (by fingerprint), from the ledger"
        " of the configured data dir or database.",
    )
    _ledger_view_options(audit, "only this agent's entries", "jsonl")
    _agents_parser(commands)
    commands.add_parser(
        "migrate",
        help="apply the PostgreSQL ledger's migrations (SMSRENT_DATABASE_URL)",
        description="Bring the schema of the PostgreSQL ledger at SMSRENT_DATABASE_URL up to this release's (run it"
        " before starting upgraded replicas; the replicas of the previous release keep working on it). An SQLite"
        " ledger migrates itself when a server opens it.",
    )
    return parser.parse_args(argv)


def _agents_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    file = argparse.ArgumentParser(add_help=False)
    file.add_argument("--file", type=Path, help="the agents file (default: SMSRENT_AGENTS_FILE)")
    agents = commands.add_parser(
        "agents",
        help="add, list or remove the agents of the HTTP server",
        description="Edit the agents file (SMSRENT_AGENTS_FILE); running servers pick a change up within seconds.",
    )
    actions = agents.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        parents=[file],
        help="add an agent; prints its new key once",
        description="Append an agent to the file. Prints its new key on stdout, once: only the key's SHA-256 is"
        " kept. With --subject the agent is an OAuth subject and gets no key.",
    )
    add.add_argument("name", help="the agent's name (letters, digits, '.', '_', '-')")
    add.add_argument("--scopes", required=True, type=_words, help="comma-separated: read, spend, admin")
    add.add_argument("--daily-budget", help="the most its purchases may cost in a rolling 24 h (USD)")
    add.add_argument("--max-price", help="the most one of its purchases may cost (USD)")
    add.add_argument("--subject", help="an OAuth subject (sub) instead of a key")
    actions.add_parser("list", parents=[file], help="the agents, with a short fingerprint of each key")
    remove = actions.add_parser("remove", parents=[file], help="take an agent out; its key stops working")
    remove.add_argument("name")


def _ledger_view_options(parser: argparse.ArgumentParser, agent_help: str, rows_format: str) -> None:
    """What the commands that read the ledger (report, audit) take: a window, an agent, a format, a data dir."""
    parser.add_argument("--since", type=_duration, default="24h", help="how far back: 90m, 24h (default), 7d, 2w")
    parser.add_argument("--agent", help=agent_help)
    parser.add_argument("--format", choices=("table", "csv", rows_format), default="table", help="default: table")
    parser.add_argument("--data-dir", default=argparse.SUPPRESS, help="where the ledger lives (SMSRENT_DATA_DIR)")


def _words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "sandbox": args.sandbox or None,
        "read_only": args.read_only or None,
        "data_dir": args.data_dir,
        "log_level": args.log_level,
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def configure_logging(level: str, log_format: str = "text") -> None:
    """Logs on stderr (stdout is the protocol channel in stdio mode): human-readable lines, or one JSON object per
    line with the trace id."""
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    handler.setLevel(level)  # a client's logging/setLevel may lower the smsrent logger, never stderr's level
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = load_settings(args)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in err.errors())
        sys.exit(f"smsrent-mcp: invalid configuration: {problems}")
    configure_logging(settings.log_level, settings.log_format)
    if args.command in ("report", "audit"):
        run = run_report if args.command == "report" else run_audit
        try:
            sys.stdout.write(anyio.run(run, settings, args.since, args.agent, args.format))
        except LedgerUnusable as err:
            sys.exit(f"smsrent-mcp: {err}")
        return
    if args.command == "agents":
        try:
            run_agents(args, args.file or settings.agents_file)
        except ValueError as err:  # AgentsFileError too
            sys.exit(f"smsrent-mcp: {err}")
        return
    if args.command == "migrate":
        try:
            sys.stdout.write(anyio.run(migrate, settings))
        except LedgerUnusable as err:
            sys.exit(f"smsrent-mcp: {err}")
        return
    export_traces(settings.otel_endpoint)
    if settings.webhook_port is not None and settings.webhook_secret is None:
        sys.exit("smsrent-mcp: SMSRENT_WEBHOOK_PORT needs SMSRENT_WEBHOOK_SECRET (the webhook's secret path).")
    try:
        app = create_app(settings)
        if settings.database_url is not None:  # reachable, and its schema recent enough, before serving anything
            from smsrent.service.ledger.postgres.migrations import check

            anyio.run(check, settings.database_url)
    except (LedgerUnusable, ValueError) as err:  # AgentsFileError too; the sandbox with a database URL
        sys.exit(f"smsrent-mcp: {err}")
    if app.sandbox:
        sys.stderr.write(BANNER + "\n")
    try:
        if args.http:
            anyio.run(serve_http, app, args.host, args.port)
        else:
            anyio.run(serve_stdio, app)
    except KeyboardInterrupt:
        pass
    except ValueError as err:
        sys.exit(f"smsrent-mcp: {err}")
    except Exception as err:
        refusal = _ledger_refusal(err)
        if refusal is None:
            raise
        sys.exit(f"smsrent-mcp: {refusal}")


def run_agents(args: argparse.Namespace, path: Path | None) -> None:
    """`agents add|list|remove`: the new key (alone) on stdout, everything else on stderr but the list."""
    if path is None:
        raise ValueError("name the agents file: set SMSRENT_AGENTS_FILE or pass --file")
    if args.action == "list":
        sys.stdout.write(agents_table(agents_file.load(path)[1].entries))
    elif args.action == "remove":
        agents_file.remove(path, args.name)
        sys.stderr.write(f"removed agent {args.name} from {path}; servers refuse its credential within seconds\n")
    else:
        key = None if args.subject else agents_file.new_key()
        table = {
            "name": args.name,
            "scopes": args.scopes,
            "key_sha256": None if key is None else agents_file.key_digest(key),
            "subject": args.subject,
            "daily_budget": args.daily_budget,
            "max_price": args.max_price,
        }
        added = agents_file.add(path, {k: v for k, v in table.items() if v is not None})
        if key is None:
            sys.stderr.write(f"added agent {added.name} (OAuth subject {added.subject}) to {path}\n")
            return
        sys.stdout.write(key + "\n")
        sys.stderr.write(
            f"added agent {added.name} to {path}: give it the key above, sent as Authorization: Bearer <key>;"
            " it is shown only this once (the file keeps its SHA-256)\n"
        )


def agents_table(entries: Sequence[agents_file.AgentEntry]) -> str:
    """`agents list`: one line per agent; a key shows as the first 8 hex digits of its SHA-256."""
    rows: list[tuple[str, ...]] = [("name", "credential", "scopes", "daily_budget", "max_price")]
    for entry in entries:
        credential = (
            f"key sha256:{agents_file.fingerprint(entry.key_sha256)}..."
            if entry.key_sha256 is not None
            else f"subject {entry.subject}"
        )
        limits = ("-" if amount is None else str(amount) for amount in (entry.daily_budget, entry.max_price))
        rows.append((entry.name, credential, ",".join(entry.scopes), *limits))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


async def migrate(settings: Settings) -> str:
    """What `smsrent-mcp migrate` did, as one line."""
    if settings.database_url is None:
        return (
            f"Nothing to migrate: SMSRENT_DATABASE_URL is not set, and the SQLite ledger ({settings.ledger_path})"
            " migrates itself when a server opens it.\n"
        )
    from smsrent.service.ledger.postgres.base import describe
    from smsrent.service.ledger.postgres.migrations import migrate as migrate_postgres

    before, after = await migrate_postgres(settings.database_url)
    where = describe(settings.database_url)
    if before == after:
        return f"The PostgreSQL ledger ({where}) is at schema version {after}: nothing to migrate.\n"
    return f"Migrated the PostgreSQL ledger ({where}) from schema version {before} to {after}.\n"


def _ledger_refusal(err: BaseException) -> LedgerUnusable | None:
    """The ledger's refusal to start, if that is what ended the server (raised through its task groups)."""
    if isinstance(err, LedgerUnusable):
        return err
    inner = err.exceptions if isinstance(err, BaseExceptionGroup) else ()
    return next((found for e in inner if (found := _ledger_refusal(e)) is not None), None)


async def serve_stdio(app: App) -> None:
    port = app.settings.webhook_port
    if port is None:
        await app.mcp.run_stdio_async()
        return
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.supervisor.run, "webhook-listener", functools.partial(_serve_webhook_listener, app, port))
        await app.mcp.run_stdio_async()
        tg.cancel_scope.cancel()


async def _serve_webhook_listener(app: App, port: int) -> None:
    """The Getatext webhook on 127.0.0.1:<port>. A port already taken (another smsrent on the same data dir, say)
    is logged, and this server carries on without its listener."""
    import uvicorn

    from smsrent.mcp.webhook import webhook_app

    try:
        sock = _bound(port)
    except OSError as err:
        log.warning(
            "webhook port %d is taken (%s): serving without a webhook listener; codes still arrive by polling,"
            " and pushes reach the process holding the port, which shares them through the ledger",
            port,
            err.strerror or type(err).__name__,
        )
        return
    with sock:  # uvicorn would exit the process if it could not bind: it gets a bound socket
        listener = webhook_app(app.runtime, app.settings, app.webhook_secret)
        config = uvicorn.Config(listener, log_level="warning", lifespan="off")
        log.info("Getatext webhook listener on http://127.0.0.1:%d/webhooks/getatext/<secret>", port)
        await uvicorn.Server(config).serve(sockets=[sock])


def _bound(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if os.name == "posix":  # rebinding after a restart; on Windows the option would let two servers share it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_http(app: App, host: str, port: int) -> None:
    import uvicorn

    from smsrent.mcp.http import http_app

    asgi = http_app(app, host)
    log.info("serving MCP on http://%s:%d/mcp", host, port)
    config = uvicorn.Config(asgi, host=host, port=port, log_level="warning")
    await uvicorn.Server(config).serve()
