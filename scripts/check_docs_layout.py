"""Look at every page of the built docs in headless Chromium and list what does not fit.

A code block, table or diagram wider than the content column hides its end behind a
scrollbar; a Mermaid diagram that did not render shows as source. This script opens
each page of a built site (``make docs`` writes ``site/``) at a desktop width and
reports both. It is a development tool, not part of the test suite:

    pip install playwright            # the Python package; no browser download needed
    apt-get install chromium          # Debian's Chromium
    python3 scripts/check_docs_layout.py site --mermaid node_modules/mermaid/dist/mermaid.min.js

Material loads Mermaid from unpkg.com; on a machine without that network, give a local
copy with ``--mermaid`` (``npm install mermaid``), or diagrams count as not rendered.
Exits 1 when a page has something that does not fit.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Route, sync_playwright

OVERFLOW = """() => {
  const found = [];
  const content = '.md-content pre > code, .md-content .md-typeset__scrollwrap';
  for (const el of document.querySelectorAll(content + ', .md-content .mermaid')) {
    if (el.scrollWidth > el.clientWidth + 2) {
      const text = el.textContent.trim().slice(0, 60);
      found.push(`${el.scrollWidth}px > ${el.clientWidth}px: ${text}`);
    }
  }
  for (const el of document.querySelectorAll('.md-content .mermaid')) {
    // Material renders each diagram into a closed shadow root: an empty box is a failure.
    const drawn = el.tagName === 'DIV' && el.getBoundingClientRect().height >= 50;
    if (!drawn) found.push('diagram not rendered');
  }
  return found;
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def pages(site: Path) -> list[str]:
    found = []
    for index in sorted(site.rglob("index.html")):
        relative = index.parent.relative_to(site).as_posix()
        if relative.split("/")[0] in {"assets", "search"}:
            continue
        found.append("" if relative == "." else f"{relative}/")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs' site_dir)")
    parser.add_argument("--mermaid", type=Path, help="a local mermaid.min.js for unpkg.com")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--screenshots", type=Path, help="write a full-page PNG per page here")
    args = parser.parse_args()

    def route(request_route: Route) -> None:
        url = request_route.request.url
        if url.startswith("http://127.0.0.1"):
            request_route.continue_()
        elif "unpkg.com/mermaid" in url and args.mermaid:
            request_route.fulfill(path=args.mermaid, content_type="application/javascript")
        else:
            request_route.abort()  # fonts, GitHub's API: the check stays on this machine

    bad = 0
    with serve(args.site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.route("**/*", route)
        for path in pages(args.site):
            page.goto(base + path, wait_until="load")
            page.wait_for_timeout(1500 if page.locator(".mermaid").count() else 100)
            problems = page.evaluate(OVERFLOW)
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                name = path.strip("/").replace("/", "_") or "index"
                page.screenshot(path=args.screenshots / f"{name}.png", full_page=True)
            if problems:
                bad += 1
                print(f"{path or '/'}:", *problems, sep="\n    ")
        browser.close()
    print(f"{bad} of {len(pages(args.site))} pages have content that does not fit")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
