"""Screenshot of a saved monitoring report in headless Chromium (Debian's `chromium`).

    python scripts/report_screenshot.py REPORT OUT.png [--width 1400] [--height 1800]

REPORT is a path, file:// or s3:// URL (s3 with the settings' endpoint and credentials), as
`socialads monitor` prints it. docs/monitoring-report.png was made this way. The report is
self-contained (Evidently inlines its scripts), so the browser needs no network.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def read_report(source: str) -> bytes:
    """The report's bytes from a path or an fsspec URL (S3 through the settings)."""
    if "://" not in source:
        return Path(source).read_bytes()
    import fsspec

    from socialads.settings import load_settings

    options = load_settings().storage_options(source)
    with fsspec.open(source, "rb", **options) as handle:
        data: bytes = handle.read()
    return data


def screenshot(html: bytes, out: Path, width: int, height: int, chromium: str) -> Path:
    """Render ``html`` in headless Chromium and write a ``width``×``height`` PNG to ``out``."""
    with tempfile.TemporaryDirectory(prefix="socialads-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_bytes(html)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        done = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--window-size={width},{height}",
                # Time for the report's scripts to draw the plots before the shot.
                "--virtual-time-budget=15000",
                f"--screenshot={out}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    if not out.exists():
        raise SystemExit(f"chromium wrote no screenshot (exit {done.returncode}):\n{done.stderr}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("report", help="the HTML report: path, file:// or s3:// URL")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1800)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (Debian: apt-get install chromium)")
    png = screenshot(read_report(args.report), args.out, args.width, args.height, chromium)
    print(f"{png} ({png.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
