"""`examples/quickstart.py` runs end to end against the sandbox and prints a code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_prints_a_code() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTSMS_", "GETATEXT_"))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^CODE \d{6}$", done.stdout, re.MULTILINE), done.stdout
    assert '"outcome": "code_received"' in done.stdout
    assert "Refunded an unused rental" in done.stdout
    assert "SANDBOX" in done.stderr
