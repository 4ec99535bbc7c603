"""The examples (``python -m examples``, a real process) in a real Chromium: what a
person would see on each page. The background publishers run 10 times faster
(``SSE_FAST_EXAMPLES_PACE``) to keep this short. Also: HTTP/2 over TLS carries
ten EventSources on one connection where HTTP/1.1 stalls the seventh, and the
pages resume after the server restarts. Real processes: the examples' server and Chromium."""

from __future__ import annotations

import itertools
import json
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.app import EXAMPLES
from examples.chat import HISTORY
from examples.tokens import answer
from sse_fast import Parser
from sse_fast.frames import (
    datastar_execute_script,
    datastar_patch_elements,
    datastar_patch_signals,
    datastar_remove_elements,
    htmx_fragment,
)
from sse_fast.testing import ServerProcess

from ..support.browser import chromium, examples_server, page_errors
from ..support.certificates import self_signed
from ..support.waiting import until

WAIT = 10_000  # ms: the longest wait for what a page should show


pytestmark = [
    pytest.mark.processes("the examples served for real and driven in Chromium"),
    # one worker runs the module: its Chromium and server started once, not at each of
    # several workers' visits (pytest ends a module-scoped fixture when a worker moves on)
    pytest.mark.xdist_group("examples"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with examples_server(data=tmp_path_factory.mktemp("examples")) as server:
        yield server


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 750})
    yield context
    context.close()


def numbers(page: Any, selector: str, prefix: str) -> list[int]:
    """The numbers in the ids (``prefix-N``) of the elements matching ``selector``."""
    ids = page.eval_on_selector_all(selector, "items => items.map(i => i.id)")
    return [int(i.removeprefix(prefix)) for i in ids]


def descending_by_one(values: list[int]) -> bool:
    return all(a - b == 1 for a, b in itertools.pairwise(values))


def cells(page: Any, selector: str) -> list[list[str]]:
    """The text of each cell of the table rows ``selector`` selects, row by row."""
    rows: list[list[str]] = page.eval_on_selector_all(
        selector, "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    return rows


def post_chat(server: ServerProcess, name: str, text: str) -> httpx.Response:
    return httpx.post(f"{server.url}/chat/send", json={"name": name, "text": text}, timeout=5)


def test_the_index_links_every_example(server: ServerProcess, context: Any) -> None:
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server.url + "/")
    links = page.eval_on_selector_all("#examples a", "links => links.map(a => a.pathname)")
    assert links == [path for path, _, _ in EXAMPLES]
    for path in links:
        assert httpx.get(server.url + path, timeout=5).status_code == 200
    assert errors == []


def test_datastar_signals_update_and_the_feed_keeps_the_newest_ten(
    server: ServerProcess, context: Any
) -> None:
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server.url + "/datastar")
    # the figures come with the page (server-rendered signals), then are patched
    users = page.locator("#users")
    assert re.fullmatch(r"\d+", users.inner_text())
    updated = page.inner_text("#updated")
    page.wait_for_function(
        f"() => document.getElementById('updated').textContent !== {json.dumps(updated)}",
        timeout=WAIT,
    )
    assert int(users.inner_text()) >= 1200
    # the feed: patched elements, newest first, bounded to 10, none lost or repeated
    first = numbers(page, "#feed li", "activity-")
    assert len(first) <= 10 and descending_by_one(first)
    top = first[0] if first else 0
    page.wait_for_function(
        f"() => parseInt(document.querySelector('#feed li').id.split('-')[1]) >= {top + 15}",
        timeout=WAIT,
    )
    for _ in range(10):
        shown = numbers(page, "#feed li", "activity-")
        assert len(shown) == 10, shown
        assert descending_by_one(shown), shown
        page.wait_for_timeout(100)  # pace: the live feed sampled over a second of updates
    assert page.inner_text("#status") == "open"
    assert errors == []


def test_htmx_swaps_multi_line_fragments_and_keeps_fifty(
    server: ServerProcess, context: Any
) -> None:
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server.url + "/htmx")
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'open'", timeout=WAIT
    )
    page.wait_for_function(
        "() => document.getElementById('readings').children.length >= 50", timeout=WAIT
    )
    top = numbers(page, "#readings li", "reading-")[0]
    page.wait_for_function(
        f"() => parseInt(document.querySelector('#readings li').id.split('-')[1]) >= {top + 5}",
        timeout=WAIT,
    )
    shown = numbers(page, "#readings li", "reading-")
    assert len(shown) == 50 and descending_by_one(shown), shown
    # each reading was a multi-line fragment (several data: lines), swapped as HTML
    first = page.locator("#readings li").first
    assert first.locator("time").count() == 1 and first.locator("b").count() == 1
    assert "\n" in first.inner_html()
    assert re.search(r"°C, \d+ % humidity", first.inner_text())
    assert errors == []


def test_chat_between_two_browsers(server: ServerProcess, browser: Any) -> None:
    contexts = [browser.new_context() for _ in range(3)]
    try:
        ana, ben = contexts[0].new_page(), contexts[1].new_page()
        errors = [page_errors(ana), page_errors(ben)]
        ana.goto(server.url + "/chat?name=ana")
        ana.wait_for_function("() => document.getElementById('online').textContent === 'ana'")
        ben.goto(server.url + "/chat?name=ben")
        for page in (ana, ben):
            page.wait_for_function(
                "() => document.getElementById('online').textContent === 'ana, ben'", timeout=WAIT
            )
        assert ana.locator("li.system", has_text="ben joined").count() == 1

        ana.fill("#text", "hello ben")
        ana.click("#send button")
        ben.locator("li.message", has_text="ana: hello ben").wait_for(timeout=WAIT)
        ben.fill("#text", "hi ana")
        ben.click("#send button")
        for page in (ana, ben):
            page.locator("li.message", has_text="ben: hi ana").wait_for(timeout=WAIT)
            texts = page.locator("li.message").all_inner_texts()
            assert texts[-2:] == ["ana: hello ben", "ben: hi ana"]

        contexts[1].close()  # ben closes his browser
        ana.locator("li.system", has_text="ben left").wait_for(timeout=WAIT)
        assert ana.inner_text("#online") == "ana"

        ana.fill("#text", "   ")  # refused, with the reason, and nothing sent
        ana.click("#send button")
        ana.locator("#error", has_text="text: give a non-empty string").wait_for(timeout=WAIT)

        # a newcomer gets the last 10 messages, in order
        for n in range(12):
            assert post_chat(server, "bot", f"note {n}").status_code == 200
        carl = contexts[2].new_page()
        errors.append(page_errors(carl))
        carl.goto(server.url + "/chat?name=carl")
        carl.locator("li.message", has_text="bot: note 11").wait_for(timeout=WAIT)
        # a marker sent after: a note shown twice (the history and the live stream
        # overlapping) would have come before it, on the page's one ordered stream
        assert post_chat(server, "bot", "marker").status_code == 200
        carl.locator("li.message", has_text="bot: marker").wait_for(timeout=WAIT)
        assert carl.locator("li.message").all_inner_texts() == [
            *(f"bot: note {n}" for n in range(12 - HISTORY, 12)),
            "bot: marker",
        ]
        refused = "the server responded with a status of 400"  # the browser logs the refusal
        assert [sum(refused in e for e in page) for page in errors] == [1, 0, 0]
        assert [e for page in errors for e in page if refused not in e] == []
    finally:
        for context in contexts:
            context.close()


def test_chat_refuses_bad_input_with_the_reason(server: ServerProcess) -> None:
    cases = [
        ({"name": "ana"}, "text: give a non-empty string"),
        ({"name": "", "text": "x"}, "name: give a non-empty string"),
        ({"name": "ana", "text": "x" * 501}, "text: at most 500 characters, got 501"),
        (["not", "an", "object"], "send a JSON object"),
    ]
    for body, reason in cases:
        response = httpx.post(f"{server.url}/chat/send", json=body, timeout=5)
        assert response.status_code == 400 and reason in response.json()["error"]
    response = httpx.post(f"{server.url}/chat/send", content=b"{", timeout=5)
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    response = httpx.get(f"{server.url}/chat/stream", timeout=5)
    assert response.status_code == 400 and "name" in response.json()["error"]


def test_tokens_stream_in_order_and_the_streams_close(server: ServerProcess, context: Any) -> None:
    page = context.new_page()
    errors = page_errors(page)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/stream?" in r.url else None)
    page.goto(server.url + "/tokens")
    prompt = "How do tokens reach the browser?"
    page.click("#ask button")
    page.locator("#answer-status", has_text="done").wait_for(timeout=WAIT)
    tokens = answer(prompt)
    assert page.eval_on_selector("#answer", "e => e.textContent") == "".join(tokens)
    assert page.inner_text("#answer-status") == f"done: {len(tokens)} tokens (stop)"
    assert page.eval_on_selector("#answer-progress", "e => e.value") == 100
    assert page.evaluate("answerSource.readyState") == 2  # closed on `done`

    page.click("#run button")
    page.locator("#task-status", has_text="complete").wait_for(timeout=WAIT)
    assert page.inner_text("#task-status") == "complete: 20 parts processed"
    assert page.eval_on_selector("#task-progress", "e => e.value") == 100
    assert page.evaluate("taskSource.readyState") == 2
    # pace: longer than the retry, the time a stream left open would take to reconnect
    page.wait_for_timeout(1500)
    assert [url.split("?")[0].rsplit("/", 2)[-2] for url in streams] == ["tokens", "tasks"]
    assert errors == []


def test_a_token_stream_resumes_after_its_last_event_id(server: ServerProcess) -> None:
    tokens = answer("resume me")
    with httpx.stream(
        "GET",
        f"{server.url}/tokens/stream",
        params={"prompt": "resume me"},
        headers={"Last-Event-ID": "9"},
        timeout=10,
    ) as response:
        body = response.read().decode()
    ids = [int(i) for i in re.findall(r"^id: (\d+)\r?$", body, re.M)]
    assert ids == list(range(10, len(tokens)))
    assert body.rstrip().endswith(f'data: {{"tokens": {len(tokens)}, "finish_reason": "stop"}}')
    for bad in ({"prompt": ""}, {"prompt": "x" * 501}):
        assert httpx.get(f"{server.url}/tokens/stream", params=bad, timeout=5).status_code == 400
    assert httpx.get(f"{server.url}/tasks/stream?steps=0", timeout=5).status_code == 400


def test_the_dashboard_shows_the_edge(server: ServerProcess, context: Any) -> None:
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server.url + "/dashboard")
    page.wait_for_function(
        "() => parseInt(document.getElementById('uptime').textContent) >= 2", timeout=WAIT
    )
    assert int(page.inner_text("#connections")) >= 1  # this page's stream at least
    row = page.locator("#topics tr", has_text="demo/edge")
    assert int(row.locator("td").nth(1).inner_text()) >= 1
    assert float(page.inner_text("#published")) > 0
    stats = httpx.get(f"{server.url}/sse/stats", timeout=5).json()
    assert set(stats["topics"]) >= {"demo/edge", "demo/ticks", "demo/sensors"}
    assert errors == []


def test_the_reference_page_lists_named_events_with_their_ids(
    server: ServerProcess, context: Any
) -> None:
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server.url + "/reference")
    page.wait_for_function(
        "() => document.querySelectorAll('#log tr.event-tick').length >= 6", timeout=WAIT
    )
    rows = cells(page, "#log tr.event-tick")
    ids = [int(row[1]) for row in rows]
    ticks = [json.loads(row[2])["n"] for row in rows]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert descending_by_one(ticks)
    assert page.inner_text("#status") == "open"
    assert errors == []


def test_the_notifications_page_gets_every_topic_of_its_pattern(
    server: ServerProcess, context: Any
) -> None:
    """``/notifications``: one ``EventSource`` of ``user/42/*`` gets user 42's inbox,
    orders and likes and a topic per mention created after the page opened, each
    notification once and in order, none of user 43's."""
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server.url + "/notifications")
    page.wait_for_function(
        "() => document.querySelectorAll('#log tr.notification').length >= 9", timeout=WAIT
    )
    rows = cells(page, "#log tr.notification")
    topics = [row[1] for row in rows]
    assert all(topic.startswith("user/42/") for topic in topics), topics
    kinds = {topic.split("/")[2] for topic in topics}
    assert kinds == {"inbox", "orders", "likes", "mentions"}, kinds
    mentions = [t for t in topics if t.startswith("user/42/mentions/")]
    assert len(set(mentions)) == len(mentions) >= 2  # a new topic each, all joined the stream
    numbers = [int(row[2].split("#")[1].split()[0]) for row in rows]
    assert descending_by_one(numbers)  # every notification once, newest first
    ids = [int(row[0]) for row in rows]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert page.inner_text("#status") == "open"
    assert errors == []


TEN_STREAMS = """async () => {
    const counts = new Array(10).fill(0);
    const sources = counts.map((_, i) => {
        const source = new EventSource("/sse/events?topic=demo/ticks");
        source.addEventListener("tick", () => { counts[i] += 1; });
        return source;
    });
    await new Promise((done) => setTimeout(done, 3000));
    window.tenSources = sources;
    return counts;
}"""


def test_ten_streams_on_one_page_share_one_http2_connection(tmp_path: Path, browser: Any) -> None:
    cert, key = self_signed(tmp_path)
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--http", "auto")
    with examples_server(*args, data=tmp_path) as server:
        context = browser.new_context(ignore_https_errors=True)  # the test's own certificate
        try:
            page = context.new_page()
            page.goto(server.url + "/")
            protocol = page.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            assert protocol == "h2"
            counts = page.evaluate(TEN_STREAMS)
            assert all(count >= 1 for count in counts), counts
            verify = ssl.create_default_context(cafile=str(cert))
            listing = httpx.get(
                f"{server.url}/sse/stats?connections=1", verify=verify, timeout=5
            ).json()["connection_list"]
            tabs = [c for c in listing if c["topics"] == ["demo/ticks"]]
            assert len(tabs) == 10
            assert len({c["client"] for c in tabs}) == 1  # one TCP connection
        finally:
            context.close()


def test_over_http1_the_seventh_stream_stalls(server: ServerProcess, context: Any) -> None:
    """The reason for the test above: a browser opens at most six HTTP/1.1
    connections per origin, so streams past the sixth wait."""
    page = context.new_page()
    page.goto(server.url + "/")
    counts = page.evaluate(TEN_STREAMS)
    assert sorted(count >= 1 for count in counts) == [False] * 4 + [True] * 6, counts
    page.evaluate("window.tenSources.forEach((s) => s.close())")


def test_pages_resume_after_the_server_restarts(tmp_path: Path, browser: Any) -> None:
    context = browser.new_context()
    try:
        with examples_server(data=tmp_path) as server:
            port = server.port
            chat, sensors, plain = context.new_page(), context.new_page(), context.new_page()
            stats = context.new_page()
            chat.goto(server.url + "/chat?name=ana")
            sensors.goto(server.url + "/htmx")
            plain.goto(server.url + "/reference")
            stats.goto(server.url + "/datastar")
            stats.wait_for_function(
                "() => document.querySelectorAll('#feed li').length === 10", timeout=WAIT
            )
            plain.wait_for_function(
                "() => document.querySelectorAll('#log tr.event-tick').length >= 2", timeout=WAIT
            )
            chat.wait_for_function("() => document.getElementById('status').textContent === 'open'")
            for n in (1, 2, 3):
                assert post_chat(server, "bot", f"m{n}").status_code == 200
            chat.locator("li.message", has_text="bot: m3").wait_for(timeout=WAIT)
            old_top = numbers(stats, "#feed li", "activity-")[0]
        for page in (chat, sensors):  # the pages see the server go
            page.wait_for_function(
                "() => document.getElementById('status').textContent === 'reconnecting'",
                timeout=WAIT,
            )
        top = numbers(sensors, "#readings li", "reading-")[0]
        with examples_server(data=tmp_path, port=port) as server:
            for n in (4, 5):  # published at once, before or after the page is back
                assert post_chat(server, "bot", f"m{n}").status_code == 200
            chat.locator("li.message", has_text="bot: m5").wait_for(timeout=WAIT)
            # a marker after: m4 or m5 twice (the resume and the live stream
            # overlapping) would have come before it, on the page's one ordered stream
            assert post_chat(server, "bot", "m6").status_code == 200
            chat.locator("li.message", has_text="bot: m6").wait_for(timeout=WAIT)
            assert chat.locator("li.message").all_inner_texts() == [
                f"bot: m{n}" for n in range(1, 7)
            ]  # each once, in order
            assert chat.inner_text("#status") == "open"
            # the sensor feed reconnected (the extension's backoff) and carries on
            sensors.wait_for_function(
                "() => document.getElementById('status').textContent === 'open'", timeout=WAIT
            )
            sensors.wait_for_function(
                f"() => document.querySelector('#readings li').id !== 'reading-{top}'",
                timeout=WAIT,
            )
            # the edge without Redis kept no history across the restart: the plain
            # EventSource's Last-Event-ID is not resumed, and the edge says so
            missed = plain.locator("#log tr.event-sse-fast-missed")
            missed.wait_for(timeout=WAIT)
            reason = json.loads(missed.locator("td").nth(2).inner_text())["reason"]
            assert reason == "unknown"
            plain.wait_for_function(  # and the ticks go on
                "() => document.querySelector('#log tr').className === 'event-tick'", timeout=WAIT
            )
            # Datastar ignores sse-fast-missed; the feed (the whole list each time,
            # numbered from 1 again by the new process) is right with the next event
            stats.wait_for_function(  # a feed of the new process's items only (a prepend
                # onto the old list would leave a gap in the numbers)
                f"""() => {{
                    const shown = [...document.querySelectorAll('#feed li')]
                        .map(li => parseInt(li.id.split('-')[1]));
                    return shown[0] !== {old_top}
                        && shown.every((n, i) => n === shown[0] - i);
                }}""",
                timeout=WAIT,
            )
            shown = numbers(stats, "#feed li", "activity-")
            assert len(shown) <= 10 and descending_by_one(shown), shown
    finally:
        context.close()


DIALECT_PAGE = """<!doctype html><meta charset="utf-8">
<script type="module" src="/static/vendor/datastar.js"></script>
<main data-signals="{count: 0, kept: 'x'}"
      data-init="@get('/sse/events?topic=test/datastar', {openWhenHidden: true})">
  <span id="count" data-text="$count"></span><span id="kept" data-text="$kept"></span>
  <div id="target"><p>old</p></div>
  <ul id="list"><li id="middle">m</li></ul>
  <p id="outer-me">old</p><p id="replace-me">old</p><p id="remove-me">x</p>
  <svg id="drawing"></svg><div id="later"></div>
</main>"""


def wait_subscribed(server: ServerProcess, topic: str) -> None:
    """Until the edge has a subscriber on ``topic`` (a page's stream is open)."""

    def subscribed() -> bool:
        topics = httpx.get(f"{server.url}/sse/stats", timeout=5).json()["topics"]
        return bool(topics.get(topic, {}).get("subscribers", 0) >= 1)

    until(subscribed, WAIT / 1000, f"a subscriber on {topic}")


def publish_frame(server: ServerProcess, topic: str, frame: bytes) -> None:
    """Publish ``frame``'s event through the edge (``POST /sse/publish``)."""
    (event,) = Parser().feed(frame)
    body = {"topic": topic, "event": event.event, "data": event.data}
    assert httpx.post(f"{server.url}/sse/publish", json=body, timeout=5).status_code == 200


def test_the_datastar_client_applies_every_helper(server: ServerProcess, context: Any) -> None:
    """Each patch mode, signals with and without onlyIfMissing, a script, an SVG
    element, multi-line HTML: made by our helpers, applied by Datastar 1.0.1."""
    page = context.new_page()
    errors = page_errors(page)
    page.route(
        server.url + "/datastar-dialect",
        lambda route: route.fulfill(body=DIALECT_PAGE, content_type="text/html"),
    )
    page.goto(server.url + "/datastar-dialect")
    page.wait_for_function("() => document.getElementById('kept').textContent === 'x'")
    wait_subscribed(server, "test/datastar")
    frames = [
        datastar_patch_elements('<p id="outer-me">new outer</p>'),
        datastar_patch_elements("<b>inner</b>", selector="#target", mode="inner"),
        datastar_patch_elements('<li id="first">f</li>', selector="#list", mode="prepend"),
        datastar_patch_elements('<li id="last">l</li>', selector="#list", mode="append"),
        datastar_patch_elements('<li id="b">b</li>', selector="#middle", mode="before"),
        datastar_patch_elements('<li id="a">a</li>', selector="#middle", mode="after"),
        datastar_patch_elements('<p id="replaced">r</p>', selector="#replace-me", mode="replace"),
        datastar_remove_elements("#remove-me"),
        datastar_patch_elements(
            '<circle id="dot" r="5"></circle>', selector="#drawing", mode="append", namespace="svg"
        ),
        datastar_patch_elements(
            '<li id="lines">\n  two\r\n  lines\n</li>\n', selector="#list", mode="append"
        ),
        datastar_patch_signals({"count": 5}),
        datastar_patch_signals({"kept": "y", "fresh": 1}, only_if_missing=True),
        datastar_patch_elements('<div id="later"><i id="fresh" data-text="$fresh"></i></div>'),
        datastar_execute_script("document.body.dataset.ran = 'yes'"),
    ]
    for frame in frames:
        publish_frame(server, "test/datastar", frame)
    page.wait_for_function("() => document.body.dataset.ran === 'yes'", timeout=WAIT)
    page.wait_for_function("() => document.getElementById('count').textContent === '5'")
    dom = page.evaluate(
        """() => ({
            outer: document.getElementById('outer-me').textContent,
            inner: document.getElementById('target').innerHTML,
            list: [...document.querySelectorAll('#list li')].map(li => li.id),
            replaced: ['replaced', 'replace-me'].map(id => !!document.getElementById(id)),
            removed: document.getElementById('remove-me') === null,
            svg: document.getElementById('dot').namespaceURI,
            lines: document.getElementById('lines').textContent,
            kept: document.getElementById('kept').textContent,
            fresh: document.getElementById('fresh').textContent,
            scripts: document.querySelectorAll('body > script').length,
        })"""
    )
    assert dom == {
        "outer": "new outer",
        "inner": "<b>inner</b>",
        "list": ["first", "b", "middle", "a", "last", "lines"],
        "replaced": [True, False],
        "removed": True,
        "svg": "http://www.w3.org/2000/svg",
        "lines": "\n  two\n  lines\n",
        "kept": "x",  # onlyIfMissing: an existing signal is left alone
        "fresh": "1",  # ... and a missing one is added
        "scripts": 0,  # auto_remove: the script removed itself
    }
    assert errors == []


HTMX_PAGE = """<!doctype html><meta charset="utf-8">
<script src="/static/vendor/htmx.min.js"></script>
<script src="/static/vendor/htmx-ext-sse.js"></script>
<div hx-ext="sse" sse-connect="/sse/events?topic=test/htmx">
  <div id="box" sse-swap="fragment"></div>
</div>"""


def test_the_htmx_extension_swaps_what_the_helper_sends(
    server: ServerProcess, context: Any
) -> None:
    """A fragment with every line end (CRLF, CR, LF), indentation and an empty
    line arrives as the HTML it was, line ends as LF (the browser joins data
    lines with LF)."""
    page = context.new_page()
    errors = page_errors(page)
    page.route(
        server.url + "/htmx-dialect",
        lambda route: route.fulfill(body=HTMX_PAGE, content_type="text/html"),
    )
    page.goto(server.url + "/htmx-dialect")
    wait_subscribed(server, "test/htmx")
    fragment = '<section id="s">\r\n  <h2>Title</h2>\r\n\r\n  <p>one\rtwo</p>\n</section>'
    publish_frame(server, "test/htmx", htmx_fragment(fragment, event="fragment"))
    page.wait_for_function("() => document.getElementById('s') !== null", timeout=WAIT)
    expected = fragment.replace("\r\n", "\n").replace("\r", "\n")
    assert page.eval_on_selector("#box", "box => box.innerHTML") == expected
    assert errors == []


def test_ids_from_clients_that_are_no_numbers_of_ours(server: ServerProcess) -> None:
    for last in ("²", "٣", "1" * 5000, "-1", "x"):  # digits Python's int() takes, and not
        with httpx.stream(
            "GET",
            f"{server.url}/tokens/stream",
            params={"prompt": "ids"},
            headers={"Last-Event-ID": last.encode()},
            timeout=10,
        ) as response:
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("id: "))
            assert first == "id: 0"  # from the start
    for steps in ("²", "1" * 5000):
        reply = httpx.get(f"{server.url}/tasks/stream", params={"steps": steps}, timeout=5)
        assert reply.status_code == 400 and "steps" in reply.json()["error"]


def test_typed_channels_from_declarations_to_a_generated_client(
    server: ServerProcess, context: Any
) -> None:
    """The BuildAmp example: the page's client is generated from the Python
    declarations and compiled with tsc; it gets each stream's typed events, and
    the edge refuses a publish that does not fit them."""
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server.url + "/typed")
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'open'", timeout=WAIT
    )
    for list_id in ("comments", "notifications", "alerts"):
        page.wait_for_function(
            f"() => document.getElementById('{list_id}').children.length >= 2", timeout=WAIT
        )
    first = page.locator("#comments li").first.inner_text()
    assert re.fullmatch(r"#\d+ (Ada|Grace|Linus|Barbara): .+", first)
    assert re.fullmatch(
        r"report-\d+: ok in \d+\.\d s", page.locator("#notifications li").first.inner_text()
    )
    assert re.fullmatch(
        r"(INFO|WARNING|CRITICAL): check \d+", page.locator("#alerts li").first.inner_text()
    )
    assert errors == []
    body = {"topic": "item:1", "event": "CommentAdded", "data": {"comment_id": "x"}}
    refused = httpx.post(f"{server.url}/sse/publish", json=body, timeout=5)
    assert refused.status_code == 400 and "$.comment_id" in refused.json()["error"]
    schema = httpx.get(f"{server.url}/sse/schema", timeout=5).json()
    assert set(schema["streams"]) == {"comments", "notifications", "alerts"}
