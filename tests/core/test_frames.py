"""Exact frames for Datastar, htmx and heartbeats (built on the loaded encoder)."""

from __future__ import annotations

import pytest

import sse_fast
from sse_fast import EncodeError, datastar_patch_elements, datastar_patch_signals
from sse_fast.frames import heartbeat, htmx_fragment


def test_patch_elements_minimal() -> None:
    assert datastar_patch_elements('<div id="a">x</div>') == (
        b'event: datastar-patch-elements\ndata: elements <div id="a">x</div>\n\n'
    )


def test_patch_elements_all_options() -> None:
    frame = datastar_patch_elements(
        "<li>1</li>\n<li>2</li>",
        selector="#list",
        mode="append",
        use_view_transition=True,
        namespace="svg",
        id="ev-1",
        retry=2000,
    )
    assert frame == (
        b"event: datastar-patch-elements\nid: ev-1\nretry: 2000\n"
        b"data: mode append\ndata: selector #list\ndata: useViewTransition true\n"
        b"data: namespace svg\ndata: elements <li>1</li>\ndata: elements <li>2</li>\n\n"
    )


def test_patch_elements_default_retry_not_written() -> None:
    assert b"retry" not in datastar_patch_elements("<p/>", retry=1000)
    assert b"retry: 0\n" in datastar_patch_elements("<p/>", retry=0)


def test_patch_elements_remove() -> None:
    assert datastar_patch_elements(selector="#gone", mode="remove") == (
        b"event: datastar-patch-elements\ndata: mode remove\ndata: selector #gone\n\n"
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"elements": "<p/>", "mode": "sideways"}, "mode"),
        ({"elements": None}, "elements"),
        ({"mode": "remove"}, "selector"),
        ({"elements": "<p/>", "selector": "a\nb"}, "selector"),
        ({"elements": 5}, "elements"),
        ({"elements": "<p/>", "namespace": "xml"}, "namespace"),
        ({"elements": "<p/>", "id": "a\nb"}, "id"),
    ],
)
def test_patch_elements_refuses(kwargs: dict, field: str) -> None:
    with pytest.raises(EncodeError) as info:
        datastar_patch_elements(**kwargs)
    assert info.value.field == field


def test_patch_signals() -> None:
    assert datastar_patch_signals({"count": 1, "user": {"name": "a"}}) == (
        b'event: datastar-patch-signals\ndata: signals {"count":1,"user":{"name":"a"}}\n\n'
    )
    assert datastar_patch_signals('{\n"a": 1\n}', only_if_missing=True, id=3) == (
        b"event: datastar-patch-signals\nid: 3\ndata: onlyIfMissing true\n"
        b'data: signals {\ndata: signals "a": 1\ndata: signals }\n\n'
    )


@pytest.mark.parametrize("signals", ["not json", "[1, 2]", 5])
def test_patch_signals_refuses(signals: object) -> None:
    with pytest.raises(EncodeError) as info:
        datastar_patch_signals(signals)  # type: ignore[arg-type]
    assert info.value.field == "signals"


def test_datastar_frames_parse_as_the_client_reads_them() -> None:
    (event,) = sse_fast.Parser().feed(datastar_patch_elements("<a>\n</a>", selector="#x"))
    assert event.event == "datastar-patch-elements"
    assert event.data == "selector #x\nelements <a>\nelements </a>"


def test_htmx_fragment_multiline() -> None:
    html = "<div>\n  <b>hi</b>\r\n</div>"
    frame = htmx_fragment(html, event="update", id=4)
    assert frame == b"event: update\nid: 4\ndata: <div>\ndata:   <b>hi</b>\ndata: </div>\n\n"
    (event,) = sse_fast.Parser().feed(frame)
    assert event.data == "<div>\n  <b>hi</b>\n</div>"
    with pytest.raises(EncodeError):
        htmx_fragment(b"<p/>")  # type: ignore[arg-type]


def test_heartbeat() -> None:
    assert heartbeat() == b": \n\n"
    assert heartbeat("ping") == b": ping\n\n"
    assert sse_fast.Parser().feed(heartbeat("ping")) == []
