"""Headless Chromium (through Playwright) to print reports to PDF and take screenshots.

We drive the system's Chromium (Debian package, installed by ``scripts/install.sh --browser``)
rather than a Playwright-downloaded browser: the machine may not reach the download hosts.
The flags keep the browser from calling home (updates, sync, field trials), so a page load
makes no network request beyond the file itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from features.errors import CTOError

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str:
    """The Chromium binary: ``$CHROMIUM_PATH``, else the usual system locations, else PATH."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    raise CTOError(
        "no Chromium found for PDF output: install it with `scripts/install.sh --browser` "
        "or set CHROMIUM_PATH"
    )


@dataclass
class PageLog:
    """What a page did while loading: console messages, page errors and every request URL."""

    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    @property
    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind in ("error", "warning")]


@contextmanager
def open_page(
    html_file: Path, width: int = 1200, height: int = 900
) -> Iterator[tuple[object, PageLog]]:
    """Load ``html_file`` in headless Chromium; yields the Playwright page and its load log."""
    from playwright.sync_api import sync_playwright

    log = PageLog()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_ARGS)
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda message: log.console.append((message.type, message.text)))
            page.on("pageerror", lambda error: log.page_errors.append(str(error)))
            page.on("request", lambda request: log.requests.append(request.url))
            page.on("requestfailed", lambda request: log.failed_requests.append(request.url))
            page.goto(Path(html_file).resolve().as_uri(), wait_until="load")
            yield page, log
        finally:
            browser.close()


def print_pdf(html_file: Path, pdf_file: Path) -> Path:
    """Print the report to an A4 PDF with its colours (Chromium's print engine)."""
    with open_page(html_file) as (page, _log):
        page.emulate_media(media="print")
        page.pdf(
            path=str(pdf_file),
            format="A4",
            print_background=True,
            margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"},
        )
    return Path(pdf_file)


def screenshot(html_file: Path, png_file: Path, full_page: bool = True, width: int = 1200) -> Path:
    with open_page(html_file, width=width) as (page, _log):
        page.screenshot(path=str(png_file), full_page=full_page)
    return Path(png_file)
