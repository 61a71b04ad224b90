"""`python -m build` makes a wheel and an sdist that install and run, with the version from one place."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from smsrent import __version__

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run_installed(target: Path) -> str:
    """`python -m smsrent --version` with only `target` (the installed package) providing smsrent."""
    code = (
        "import sys, runpy; sys.path.insert(0, sys.argv[1]); import smsrent;"
        " assert smsrent.__file__.startswith(sys.argv[1]), smsrent.__file__;"
        " sys.argv = ['smsrent', '--version']; runpy.run_module('smsrent', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


def test_wheel_and_sdist_build_install_and_run(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], check=True, timeout=600)
    (wheel,) = dist.glob("smsrent-*.whl")
    (sdist,) = dist.glob("smsrent-*.tar.gz")
    assert wheel.name.startswith(f"smsrent-{__version__}-")
    assert sdist.name == f"smsrent-{__version__}.tar.gz"

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(f"smsrent-{__version__}.dist-info/METADATA"))
        entry_points = archive.read(f"smsrent-{__version__}.dist-info/entry_points.txt").decode()
    assert "smsrent/cli.py" in names
    assert "smsrent/sandbox/gotsms.py" in names
    static = {
        f"smsrent/mcp/static/{name}" for name in ("dashboard.html", "dashboard.js", "dashboard.css", "favicon.svg")
    }
    assert static <= set(names)  # the dashboard is served from package data
    assert not any(name.startswith("tests/") for name in names)
    assert metadata["Version"] == __version__
    assert any(req.startswith("mcp") for req in metadata.get_all("Requires-Dist") or [])
    assert "smsrent-mcp = smsrent.cli:main" in entry_points

    from_wheel = tmp_path / "from-wheel"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target"]
    subprocess.run([*pip, str(from_wheel), str(wheel)], check=True, timeout=300)
    assert run_installed(from_wheel) == f"smsrent {__version__}"

    from_sdist = tmp_path / "from-sdist"  # the sdist builds its own wheel, then installs
    subprocess.run([*pip, str(from_sdist), str(sdist)], check=True, timeout=600)
    assert run_installed(from_sdist) == f"smsrent {__version__}"
