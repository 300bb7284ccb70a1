"""Open an evaluation report in headless Chromium: screenshot it and check the rendered page's structure.

A report that renders in a real browser, not just parses, is the acceptance check of the report page: the
DOM Chromium builds (after its own HTML error recovery) must hold every section, the tables and one inline SVG
per plot, and the page must load nothing from the network.

Run::

    .venv/bin/python bench/check_report_in_browser.py [docs/reports/evaluation-ml100k/report.html]
        [--screenshot docs/reports/evaluation-ml100k/screenshot.png]

Needs ``chromium`` (Debian: ``apt-get install -y chromium``); exits 2 naming what is missing when it is not
installed, 1 listing every failed check.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = ROOT / "docs/reports/evaluation-ml100k/report.html"
SECTIONS = ("results", "significance", "popularity", "exposure", "fairness")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Headless, isolated and offline: no sandbox (containers run as root), no GPU, nothing fetched in the background.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_browser() -> str | None:
    """Path of the first Chromium-family browser on PATH, or None."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


class _Outline(HTMLParser):
    """Counts what the checks look at: section ids, tables, SVG plots, and any external resource."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tables = 0
        self.svgs = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("id"):
            self.sections.append(str(values["id"]))
        self.tables += tag == "table"
        self.svgs += tag == "svg"
        for attribute in ("src", "href"):
            link = values.get(attribute) or ""
            if tag != "a" and link.startswith(("http:", "https:", "//")):
                self.external.append(f"<{tag} {attribute}={link}>")


def run_browser(
    browser: str, report: Path, *arguments: str, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *arguments, report.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def check(report: Path, screenshot: Path, browser: str, height: int = 6000) -> list[str]:
    """Screenshot ``report`` to ``screenshot`` (1280 px wide, ``height`` tall: the whole example page) and
    return the failed checks (empty when all pass)."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    shot = run_browser(
        browser, report, f"--screenshot={screenshot.resolve()}", f"--window-size=1280,{height}"
    )
    problems = []
    if shot.returncode != 0 or not screenshot.is_file() or screenshot.stat().st_size < 10_000:
        problems.append(f"no screenshot written (exit {shot.returncode}): {shot.stderr[-500:]}")
    dom = run_browser(browser, report, "--dump-dom")
    if dom.returncode != 0 or "<html" not in dom.stdout:
        return [*problems, f"--dump-dom failed (exit {dom.returncode}): {dom.stderr[-500:]}"]
    outline = _Outline()
    outline.feed(dom.stdout)
    missing = [s for s in SECTIONS if s not in outline.sections]
    if missing:
        problems.append(f"sections missing from the rendered page: {', '.join(missing)}")
    if outline.tables < 4:
        problems.append(
            f"expected at least 4 tables (results, significance, items, fairness), found {outline.tables}"
        )
    if outline.svgs < 4:
        problems.append(
            f"expected at least 4 SVG plots (metrics, popularity, Lorenz, groups), found {outline.svgs}"
        )
    if outline.external:
        problems.append(f"the page loads external resources: {', '.join(outline.external)}")
    for needed in ("Lorenz", "Popularity bias", "Significance", "Fairness"):
        if needed not in dom.stdout:
            problems.append(f"the rendered page lacks the text {needed!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("report", nargs="?", type=Path, default=DEFAULT_REPORT)
    parser.add_argument(
        "--screenshot", type=Path, help="PNG to write (default: screenshot.png beside the report)"
    )
    parser.add_argument("--height", type=int, default=6000, help="Screenshot height in pixels")
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        print("no Chromium found on PATH: install it (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"{args.report}: no such report; write one with 'cinesync report RUN_DIR'", file=sys.stderr)
        return 2
    screenshot = args.screenshot or args.report.with_name("screenshot.png")
    problems = check(args.report, screenshot, browser, args.height)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: {args.report} renders in {browser}; screenshot {screenshot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
