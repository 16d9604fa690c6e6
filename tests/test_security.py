"""Security checks over the tree: no credentials in committed files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the committed files")
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [name for name in out.splitlines() if (ROOT / name).is_file()]


def test_no_secrets_in_committed_files() -> None:
    """detect-secrets over every tracked file; the documented development defaults of
    .env.example are the only credentials, and code that repeats them is marked inline."""
    scanner = Path(sys.executable).with_name("detect-secrets")
    result = subprocess.run(
        [str(scanner), "scan", *tracked_files()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    findings = {
        name: [(r["type"], r["line_number"]) for r in results]
        for name, results in json.loads(result.stdout)["results"].items()
        if name != ".env.example"
    }
    assert findings == {}


def test_the_scanner_finds_a_planted_secret(tmp_path: Path) -> None:
    """The scan above can fail: a real-looking key is reported."""
    planted = tmp_path / "settings.py"
    key = (
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"  # pragma: allowlist secret (AWS docs' example)
    )
    planted.write_text(f'aws_secret_access_key = "{key}"\n')
    scanner = Path(sys.executable).with_name("detect-secrets")
    result = subprocess.run(
        [str(scanner), "scan", str(planted)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout)["results"]
