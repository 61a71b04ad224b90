"""The delivery benchmark stays runnable: a quick run completes and prints every figure (no timing is judged)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_every_section() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTSMS_", "GETATEXT_", "SMSRENT_"))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "delivery.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    for heading in ("Delivery latency", "Provider requests per minute", "Cold start", "Memory, HTTP transport"):
        assert heading in done.stdout
    for row in ("GotSMS polling", "Getatext webhook", "Getatext polling", "GotSMS baseline", "Getatext baseline"):
        assert row in done.stdout
    assert "Targets" in done.stdout
