"""Headless Chromium: screenshots of the MLflow UI pages the demo links, and their rendered
text, for the docs and for the tests that check what a user sees.

MLflow's UI is a JavaScript app: its HTML holds no run names until the app has run, so a
plain HTTP GET proves nothing about the page. ``chromium --headless --dump-dom`` runs the
app for a virtual-time budget and prints the DOM it built; ``--screenshot`` saves the
same render as a PNG. Chromium comes from Debian's package; when it is missing and this
runs as root with apt-get (the CI machines), it is installed on first use.

  python -m infra.browser shots                # the demo's pages -> .local/screenshots/
  python -m infra.browser shots --out docs/images
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from infra.cli import Unreachable, run
from infra.config import REPO_ROOT

WINDOW = (1440, 900)
BUDGET_MS = 10_000  # virtual time for the app to fetch and render


def chromium() -> str:
    """The chromium binary; installed with apt-get when missing and allowed (root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unreachable(
            "chromium is not installed: `sudo apt-get install chromium` (Debian/Ubuntu) "
            "or put a chromium binary on PATH"
        )
    print("browser: installing Debian's chromium (apt-get) ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("chromium")
    if not found:
        raise Unreachable("apt-get installed chromium, but no chromium binary is on PATH")
    return found


def _headless(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # as root, as in CI; the pages are our own server's
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--virtual-time-budget={BUDGET_MS}",
            *args,
        ],
        capture_output=True,
        timeout=timeout_s,
        check=True,
    )


def page_text(url: str) -> str:
    """The visible text of ``url`` once its JavaScript has rendered it (one line)."""
    dom = _headless("--dump-dom", url).stdout.decode(errors="replace")
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))  # &nbsp; too becomes a space below
    return re.sub(r"\s+", " ", text).strip()


def screenshot(url: str, path: Path) -> Path:
    """A PNG of ``url`` as rendered in a WINDOW-sized viewport."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _headless(f"--screenshot={path.resolve()}", url)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return path


def demo_pages(summary: dict) -> dict[str, str]:
    """The pages the demo's summary links: the training runs, the newest run, the model."""
    where, training = summary["where"], summary["training"]
    ui = where["mlflow_ui"].rstrip("/")
    return {
        "mlflow-training-runs": where["runs"],
        # The layout parameter again: without it a run page opens in the GenAI layout.
        "mlflow-run": f"{ui}/#/experiments/{training['experiment_id']}/runs/"
        f"{training['run_id']}?workflowType=machine_learning",
        "mlflow-model": where["model"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m infra.browser",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=["shots"], help="shots: screenshot the demo's pages")
    p.add_argument(
        "--summary",
        type=Path,
        default=REPO_ROOT / ".local" / "demo" / "summary.json",
        help="the demo's summary (default .local/demo/summary.json, written by make demo)",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / ".local" / "screenshots")
    args = p.parse_args(argv)
    if not args.summary.is_file():
        raise Unreachable(f"no demo summary at {args.summary}: run `make demo` first")
    summary = json.loads(args.summary.read_text())
    for name, url in demo_pages(summary).items():
        path = screenshot(url, args.out / f"{name}.png")
        print(f"{path}  <- {url}")


if __name__ == "__main__":
    run(main, "browser")
