"""Loading the provider example answers kept under tests/fixtures/<provider>/."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_path(provider: str, name: str) -> Path:
    return FIXTURES / provider / f"{name}.json"


def fixture_text(provider: str, name: str) -> str:
    """A fixture byte for byte, to serve exactly what the document prints."""
    return fixture_path(provider, name).read_text()


def load(provider: str, name: str) -> Any:
    return json.loads(fixture_text(provider, name))


def fixture_names(provider: str) -> set[str]:
    return {path.stem for path in (FIXTURES / provider).glob("*.json")}


@cache
def getatext_as_printed() -> dict[str, str]:
    """The Getatext examples exactly as the document prints them (invalid JSON), by fixture name."""
    sections: dict[str, str] = {}
    name: str | None = None
    for line in (FIXTURES / "getatext" / "as_printed.txt").read_text().splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
        elif name is not None and line.strip():
            sections[name] = line
            name = None
    return sections


def repair_printed(text: str) -> Any:
    """Turn a printed Getatext example into JSON the way a lenient reader would, changing no key or value.

    Adds the commas the document leaves out, drops trailing commas and the `....` ellipses, and reads
    `"long_rental": "id": 1, ...` as the flat shape: the rental's fields next to the answer's own
    (a repeated key keeps its last value, as `json.loads` does).
    """
    text = re.sub(r'"long_rental":\s*(?="id")', "", text)
    text = re.sub(r",\s*\.\.\.\.", "", text)
    text = re.sub(r'(?<=["\d}\]el])\s+(?=")', ", ", text)
    text = re.sub(r",\s*(?=[}\]])", " ", text)
    return json.loads(text)
