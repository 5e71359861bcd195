"""Refresh docs/hmi-screenshot.png from the real inspection line.

    python tools/screenshot_hmi.py [--seconds 20] [--out docs/hmi-screenshot.png]

Runs graphs/inspection.yaml (embedded broker, simulated PLC) with the HMI on a free port,
lets the line run, and takes a screenshot in headless Debian Chromium via Playwright.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from procgraph.brokers import free_port
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    """Run the line, screenshot the HMI, stop."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="let the line run this long")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "hmi-screenshot.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    os.environ.update({"HMI_PORT": str(port), "PLC_PORT": str(free_port())})
    state = tempfile.TemporaryDirectory(prefix="procgraph-screenshot-")  # a fresh line
    sup = Supervisor(load_graph(ROOT / "graphs" / "inspection.yaml"), out=io.StringIO(),
                     colour=False, state_dir=state.name)
    sup.start_in_thread()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 980})
            deadline = time.monotonic() + 60
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            print(f"line running; screenshot in {args.seconds:g} s", flush=True)
            time.sleep(args.seconds)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        sup.shutdown()
        state.cleanup()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
