"""The README, the MCP Bundle manifest and the code agree: tools, configuration, version."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest
from pydantic import AliasChoices

from smsrent import __version__
from smsrent.config import Settings
from smsrent.mcp.app import create_app
from smsrent.mcp.tools import TOOLS
from tests.helpers import settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MANIFEST = json.loads((ROOT / "manifest.json").read_text())


def table(marker: str) -> list[list[str]]:
    block = README.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    rows = [line for line in block.strip().splitlines()[2:] if line.startswith("|")]
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    app = create_app(settings(tmp_path_factory.mktemp("docs")))
    return {tool.name: (tool.description or "").splitlines()[0] for tool in anyio.run(app.mcp.list_tools)}


def test_readme_tool_table_matches_the_registry(registered: dict[str, str]) -> None:
    """Each served tool's summary line, and what a caller needs (the tool table's `read` or `spend`)."""
    needs = {spec.name: spec.needs for spec in TOOLS}
    rows = table("tools")
    assert {name: (summary, need) for name, summary, need in rows} == {
        name: (summary, needs[name]) for name, summary in registered.items()
    }


def test_manifest_tools_match_the_registry(registered: dict[str, str]) -> None:
    assert {t["name"]: t["description"] for t in MANIFEST["tools"]} == registered


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    app = create_app(settings(tmp_path_factory.mktemp("docs")))

    async def listed() -> dict[str, str]:
        static = {str(r.uri): r.description or "" for r in await app.mcp.list_resources()}
        templates = {t.uri_template: t.description or "" for t in await app.mcp.list_resource_templates()}
        return {**static, **templates}

    return anyio.run(listed)


def test_readme_resource_table_matches_the_registry(resources: dict[str, str]) -> None:
    assert dict(table("resources")) == resources


def test_readme_names_the_prompt_and_its_arguments(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path))
    (prompt,) = anyio.run(app.mcp.list_prompts)
    arguments = ", ".join(a.name for a in prompt.arguments or [])
    assert f"`{prompt.name}({arguments})`" in README.replace("\n", " ")


def env_names() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        assert isinstance(field.validation_alias, AliasChoices)
        names.add(str(field.validation_alias.choices[0]))
    return names


def test_readme_configuration_table_lists_every_setting() -> None:
    assert {row[0] for row in table("config")} == env_names()


def test_manifest_maps_user_config_to_real_settings() -> None:
    env = MANIFEST["server"]["mcp_config"]["env"]
    assert set(env) <= env_names()
    for value in env.values():
        key = re.fullmatch(r"\$\{user_config\.(\w+)\}", value)
        assert key is not None
        assert key.group(1) in MANIFEST["user_config"]
    secrets = {k for k, v in MANIFEST["user_config"].items() if v.get("sensitive")}
    assert secrets == {"gotsms_api_token", "getatext_api_key"}


def test_version_is_the_package_version() -> None:
    assert MANIFEST["version"] == __version__


PER_PURCHASE = (
    "the most one purchase may cost (a rental, an extension, a renewal, a re-rent; USD); over time a rental is"
    " bounded by the daily budget"
)


def test_the_price_cap_is_documented_as_a_cap_on_each_purchase() -> None:
    """SMSRENT_MAX_PRICE caps each purchase, not what one rental costs over time (the daily budget bounds that)."""
    assert {row[0]: row[1] for row in table("config")}["SMSRENT_MAX_PRICE"] == PER_PURCHASE
    cap = MANIFEST["user_config"]["max_price"]
    assert cap["title"] == "Max price per purchase (USD)"
    assert cap["description"].startswith(PER_PURCHASE[0].upper() + PER_PURCHASE[1:] + ".")
    for text in (README, json.dumps(MANIFEST)):
        assert "per-rental" not in text
        assert "one rental may cost" not in text
