"""The documentation site (``mkdocs build --strict``, as CI builds it) in a real
Chromium, over HTTP (Material's search runs in a web worker that fetches its index:
not from ``file://``).

The site is built from the checkout by this suite's own Python, with the strict build
the README gives; one build serves every test here. Whether the docs extra alone says
all the build needs (``docs/hooks.py`` runs ``sse-fast loadgen --help``, which needs
the loadgen extra, and this suite's environment has every extra) is the install
lines' check: ``pip install -e '.[docs]'`` in a fresh venv, then this build there
(``tests/e2e/test_install_lines.py``, which ``.ci/run`` runs).

The build is this suite's strict-build check: any warning (a broken link or anchor,
an unresolved reference, a page missing from the nav) fails it, with mkdocs' output.
Then the pages a reader lands on load without an error and show their heading, every
link of the index leads to a page, and the search box finds an option and a metric
and leads to their headings.

Screenshots (1280x800) of the index, the options reference, a search, a guide and an
API page are written to ``docs/screenshots/site-*.png`` when ``SSE_FAST_SCREENSHOTS=1``
(``SSE_FAST_SCREENSHOTS=1 pytest tests/e2e/test_docs_site.py`` remakes them), else to a
temporary directory (a normal run changes no file).
Real processes: the docs site built by mkdocs and read in Chromium.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ..support.browser import REPO, chromium, page_errors

WAIT = 15_000  # ms: the longest wait for what a page should show (the search index loads)
VIEWPORT = {"width": 1280, "height": 800}
OPTION = "heartbeat_interval"  # an option of sse_fast.settings: its heading's id is its name
METRIC = "sse_fast_lag_disconnects_total"  # a metric of sse_fast.hub._metrics.CATALOGUE

#: one worker builds the site once (a module fixture per worker would build it per worker)
pytestmark = [
    pytest.mark.processes("the docs site built by mkdocs and read in Chromium"),
    pytest.mark.xdist_group("docs-site"),
    pytest.mark.mode_independent,
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a page closed while it still fetched (the search index): not the site's fault
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


Build = tuple[subprocess.CompletedProcess[str], Path]  # mkdocs' result, the site's directory


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The site, built once from the checkout, with ``--strict``."""
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    return done, out


#: the build's failure, told in full once (then every other test fails with a reminder)
_told: list[str] = []


def _fail_once(message: str) -> None:
    if _told:
        pytest.fail(f"{_told[0]} (mkdocs' output: in the first test's failure)", pytrace=False)
    lines = message.strip().splitlines()
    _told.append(f"{lines[0]} {lines[-1]}")
    pytest.fail(message, pytrace=False)


def check(build: Build) -> Path:
    """The built site, or the test fails: a failed build, or any warning."""
    done, out = build
    output = done.stdout
    if done.returncode != 0:
        _fail_once(f"mkdocs build --strict failed:\n{output}")
    # what strict mode does not count: warnings of other loggers than mkdocs' (griffe's)
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    if warnings:
        _fail_once("mkdocs build --strict warned:\n" + "\n".join(warnings))
    return out


@pytest.fixture(autouse=True)
def site(build: Build, request: pytest.FixtureRequest) -> Path | None:
    """The built site: a failed build fails every test here (the first one, the build's
    own, with mkdocs' output; the others in their setup, with a reminder)."""
    if request.function is test_the_site_builds_strictly:
        return None
    return check(build)


@pytest.fixture(scope="module")
def url(build: Build) -> Iterator[str]:
    """The site over HTTP on 127.0.0.1, an ephemeral port."""
    handler = functools.partial(_Quiet, directory=str(build[1]))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="docs-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    yield context
    context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the screenshots go: docs/screenshots/ when asked for, else nowhere kept."""
    if os.environ.get("SSE_FAST_SCREENSHOTS") == "1":
        return REPO / "docs" / "screenshots"
    return tmp_path


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_site_builds_strictly(build: Build) -> None:
    """With the docs extra alone, no warning; the command-line page has the loadgen's own
    ``--help`` (the page the loadgen extra is needed for)."""
    site = check(build)
    for page in ("index.html", "reference/options/index.html", "search/search_index.json"):
        assert (site / page).is_file(), page
    assert "usage: sse-fast loadgen" in (site / "reference" / "cli" / "index.html").read_text()


#: (path, its heading, or None for a hand-written page's whatever-it-is, screenshot name)
PAGES = [
    ("", None, "index"),
    ("getting-started/", None, None),
    ("reference/options/", "Options", "options"),
    ("reference/http/", "HTTP API", None),
    ("reference/metrics/", "Metrics", None),
    ("reference/api/sse_fast/", "sse_fast", "api"),
    ("operations/deployment/", None, "guide"),
]


@pytest.mark.parametrize(("path", "heading", "shot"), PAGES, ids=[p or "index" for p, *_ in PAGES])
def test_a_page_loads_with_its_heading(
    url: str, context: Any, shots: Path, path: str, heading: str | None, shot: str | None
) -> None:
    page = context.new_page()
    errors = page_errors(page)
    reply = page.goto(url + path)
    assert reply is not None and reply.status == 200
    h1 = page.locator("article h1")
    assert h1.count() == 1
    h1.wait_for(state="visible", timeout=WAIT)
    # the permalink's "¶" is part of the heading's text
    text = h1.inner_text().removesuffix("¶").strip()
    assert text, f"{path}: an empty heading"
    if heading is not None:
        assert text == heading
    assert page.title().endswith("sse_fast")
    if shot is not None:
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(shots / f"site-{shot}.png"))
    assert errors == []


def test_every_link_of_the_index_leads_to_a_page(url: str, context: Any) -> None:
    page = context.new_page()
    errors = page_errors(page)
    page.goto(url)
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    internal = sorted(
        {h.split("#")[0] for h in hrefs if h.startswith(url)} - {""},
    )
    # the nav lists every page (with navigation.sections the whole tree is in the page)
    assert url + "reference/options/" in internal
    assert url + "operations/deployment/" in internal
    missing = [link for link in internal if status(link) != 200]
    assert missing == []
    assert errors == []


def search(page: Any, query: str) -> list[str]:
    """Types ``query`` into Material's search (opened with ``/``, as a reader would)
    and returns the results' links, first first."""
    page.keyboard.press("/")
    box = page.locator("input.md-search__input")
    page.wait_for_function(
        "() => document.activeElement === document.querySelector('input.md-search__input')",
        timeout=WAIT,
    )
    page.keyboard.type(query)
    try:
        # results for the whole query (each result's link carries it: ?h=query)
        page.wait_for_function(
            "query => document.querySelector('input.md-search__input').value === query"
            " && document.querySelector('.md-search-result__item a[href*=\"h=' + query + '\"]')",
            arg=query,
            timeout=WAIT,
        )
    except Exception as error:  # Playwright's TimeoutError (not imported: see chromium())
        shown = page.inner_text(".md-search-result")
        raise AssertionError(f"no result for {query!r}; the search shows:\n{shown}") from error
    assert box.input_value() == query
    links: list[str] = page.eval_on_selector_all(
        ".md-search-result__item a", "links => links.map(a => a.href)"
    )
    return links


def where(link: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(link)
    return parts.path, parts.fragment


@pytest.mark.parametrize(
    ("query", "path", "shot"),
    [(OPTION, "/reference/options/", "search"), (METRIC, "/reference/metrics/", None)],
    ids=["option", "metric"],
)
def test_the_search_finds_a_name_and_leads_to_its_heading(
    url: str, context: Any, shots: Path, query: str, path: str, shot: str | None
) -> None:
    page = context.new_page()
    errors = page_errors(page)
    page.goto(url)
    links = search(page, query)
    first = [where(link) for link in links[:5]]
    assert (path, query) in first, links[:5]
    if shot is not None:
        page.screenshot(path=str(shots / f"site-{shot}.png"))
    # follow the result to the name's own heading
    page.locator(".md-search-result__item a").nth(first.index((path, query))).click()
    page.wait_for_url(lambda u: where(u) == (path, query), timeout=WAIT)
    heading = page.locator(f"article [id='{query}']")
    heading.wait_for(state="visible", timeout=WAIT)
    assert heading.evaluate("h => /^H[1-6]$/.test(h.tagName)")
    assert heading.inner_text().removesuffix("¶").strip() == query
    assert heading.is_visible() and heading.evaluate(
        "h => { const r = h.getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight }"
    )
    assert errors == []
