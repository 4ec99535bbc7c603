"""The Datastar helpers against the official Datastar Python SDK (``datastar-py``,
a test-only dependency): the same bytes for every option and their
combinations. Where the two differ on purpose, the test says how (and that
the browser reads both the same)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from datastar_py import ServerSentEventGenerator as SDK
from datastar_py import consts

from sse_fast import EncodeError, Parser
from sse_fast.frames import (
    DATASTAR_MODES,
    DATASTAR_NAMESPACES,
    datastar_execute_script,
    datastar_patch_elements,
    datastar_patch_signals,
    datastar_redirect,
    datastar_remove_elements,
)

ELEMENTS = [
    None,
    "",
    '<div id="a">x</div>',
    "<ul>\n  <li>one</li>\n  <li>two</li>\n</ul>\n",  # a template's output: final LF
    "<p>a</p>\r\n<p>b</p>\r<p>c</p>",  # every SSE line end
    "<pre>\n\n  indented\n</pre>",  # empty and indented lines
]
SELECTORS = [None, "", "#feed", "main > .item:first-child"]
IDS = [None, "", "7", "evt-1"]
RETRIES = [None, 1000, 2500]


def test_the_modes_and_namespaces_are_the_sdks() -> None:
    assert {m.value for m in consts.ElementPatchMode} == DATASTAR_MODES
    assert {n.value for n in consts.ElementPatchNamespace} == DATASTAR_NAMESPACES


def test_patch_elements_every_combination_is_byte_exact() -> None:
    compared = refused = 0
    for (
        elements,
        selector,
        mode,
        transition,
        transition_selector,
        namespace,
        id_,
        retry,
    ) in itertools.product(
        ELEMENTS,
        SELECTORS,
        sorted(DATASTAR_MODES),
        (False, True),
        (None, "#card"),
        sorted(DATASTAR_NAMESPACES),
        IDS,
        RETRIES,
    ):
        kwargs: dict[str, Any] = {
            "selector": selector,
            "mode": mode,
            "use_view_transition": transition,
            "view_transition_selector": transition_selector,
            "namespace": namespace,
            "id": id_,
            "retry": retry,
        }
        if (elements is None and mode != "remove") or (
            mode == "remove" and not elements and not selector
        ):
            with pytest.raises(EncodeError):  # what the SDK would send is no patch at all
                datastar_patch_elements(elements, **kwargs)
            refused += 1
            continue
        ours = datastar_patch_elements(elements, **kwargs)
        theirs = SDK.patch_elements(
            elements,
            selector=selector,
            mode=consts.ElementPatchMode(mode),
            use_view_transition=transition,
            view_transition_selector=transition_selector,
            namespace=consts.ElementPatchNamespace(namespace),
            event_id=id_,
            retry_duration=retry,
        )
        assert ours == str(theirs).encode(), kwargs
        compared += 1
    assert compared > 10_000 and refused > 1_000


@pytest.mark.parametrize("selector", ["#gone", ".item > a"])
@pytest.mark.parametrize("id_", IDS)
@pytest.mark.parametrize("retry", RETRIES)
def test_remove_elements(selector: str, id_: str | None, retry: int | None) -> None:
    ours = datastar_remove_elements(selector, id=id_, retry=retry)
    theirs = SDK.remove_elements(selector, event_id=id_, retry_duration=retry)
    assert ours == str(theirs).encode()


SIGNALS: list[Any] = [
    {},
    {"count": 1},
    {"user": {"name": "Ada", "tags": ["a", "b"]}, "on": True, "off": False, "gone": None},
    {"quote": 'say "hi"\\n', "ratio": 0.25, "big": 12345678901234},
    '{"a": 1}',
    '{\n  "a": 1,\n  "b": [1, 2]\n}\n',
    '{"a":\r\n1}',
]


@pytest.mark.parametrize("signals", SIGNALS)
@pytest.mark.parametrize("only_if_missing", [False, True])
@pytest.mark.parametrize("id_", IDS)
@pytest.mark.parametrize("retry", RETRIES)
def test_patch_signals_is_byte_exact(
    signals: Any, only_if_missing: bool, id_: str | None, retry: int | None
) -> None:
    ours = datastar_patch_signals(signals, only_if_missing=only_if_missing, id=id_, retry=retry)
    theirs = SDK.patch_signals(
        signals, event_id=id_, only_if_missing=only_if_missing, retry_duration=retry
    )
    assert ours == str(theirs).encode()


def _signals_of(frame: bytes) -> Any:
    (event,) = Parser().feed(frame)
    lines = event.data.split("\n")
    return json.loads("\n".join(line.removeprefix("signals ") for line in lines))


@pytest.mark.parametrize(
    "signals", [{"name": "Zoë", "city": "Kraków", "emoji": "🚀"}, {"tiny": 1e-7}]
)
def test_patch_signals_differs_from_the_sdk_only_in_json_spelling(signals: Any) -> None:
    """orjson writes UTF-8 and ``1e-7``; the SDK's json.dumps writes ``\\u00eb`` and
    ``1e-07``: other bytes, the same merge patch once parsed."""
    ours = datastar_patch_signals(signals)
    theirs = str(SDK.patch_signals(signals)).encode()
    assert ours != theirs
    assert _signals_of(ours) == _signals_of(theirs) == signals


SCRIPTS = ["console.log('hi')", "const a = 1;\nconsole.log(a);\n"]
ATTRIBUTES: list[Any] = [
    None,
    {"type": "module"},
    {"data-note": 'a "quoted" <value> & more'},
    ["defer", 'nonce="abc"'],
]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("auto_remove", [True, False])
@pytest.mark.parametrize("attributes", ATTRIBUTES)
@pytest.mark.parametrize("id_", IDS)
@pytest.mark.parametrize("retry", RETRIES)
def test_execute_script_is_byte_exact(
    script: str, auto_remove: bool, attributes: Any, id_: str | None, retry: int | None
) -> None:
    ours = datastar_execute_script(
        script, auto_remove=auto_remove, attributes=attributes, id=id_, retry=retry
    )
    theirs = SDK.execute_script(
        script, auto_remove=auto_remove, attributes=attributes, event_id=id_, retry_duration=retry
    )
    assert ours == str(theirs).encode()


def test_execute_script_refuses_what_would_end_its_element() -> None:
    with pytest.raises(EncodeError, match="</script"):
        datastar_execute_script("a = '</SCRIPT>'")


@pytest.mark.parametrize("location", ["/", "/chat?room=1&name=ada", "https://example.com/a#b"])
def test_redirect_is_byte_exact_for_urls(location: str) -> None:
    assert datastar_redirect(location) == str(SDK.redirect(location)).encode()


def test_redirect_escapes_what_the_sdk_would_let_break_out() -> None:
    """The SDK puts the location in a JavaScript string as is: a quote ends the
    string, ``</script>`` ends the element. Here both stay text."""
    hostile = "/x'; alert(1); '</script><script>alert(2)//"
    (event,) = Parser().feed(datastar_redirect(hostile))
    script = event.data.split("elements ", 1)[1]
    assert script.count("</script>") == 1 and script.endswith("</script>")
    assert "\\'; alert(1); \\'\\x3C/script>" in script
    assert "'; alert(1)" in str(SDK.redirect(hostile))  # the SDK's string breaks out


def test_a_line_separator_stays_inside_its_line() -> None:
    """U+2028 is no line end in SSE: the element keeps it. The SDK's
    ``str.splitlines`` cuts there, and the browser gets another element."""
    html = "<p>a\u2028b</p>"
    assert datastar_patch_elements(html).count(b"elements ") == 1
    assert str(SDK.patch_elements(html)).count("elements ") == 2
    (event,) = Parser().feed(datastar_patch_elements(html))
    assert event.data == "elements " + html


def test_the_other_differences_from_the_sdk() -> None:
    """Where the SDK writes something the client cannot use, or drops a value
    the SSE format gives meaning to, the helpers differ; each case here."""
    # retry 0 means "reconnect at once": written (the SDK drops any falsy retry)
    assert b"retry: 0\n" in datastar_patch_signals({"a": 1}, retry=0)
    assert "retry" not in str(SDK.patch_signals({"a": 1}, retry_duration=0))
    # an int id is an id (the SDK takes str only and drops a falsy one)
    assert b"id: 0\n" in datastar_patch_signals({"a": 1}, id=0)
    # NaN is no JSON: orjson writes null, the SDK writes NaN (JSON.parse refuses it)
    assert _signals_of(datastar_patch_signals({"a": float("nan")})) == {"a": None}
    assert "NaN" in str(SDK.patch_signals({"a": float("nan")}))
    # keys must be str (a signal name); the SDK turns 1 into "1"
    with pytest.raises(EncodeError, match="signals"):
        datastar_patch_signals({1: "a"})
    # \v, \f, \x1c-\x1e, \x85 and U+2029 end lines for str.splitlines, not for SSE
    for character in "\v\f\x1c\x1d\x1e\x85\u2029":
        html = f"<p>a{character}b</p>"
        assert datastar_patch_elements(html).count(b"elements ") == 1
        assert str(SDK.patch_elements(html)).count("elements ") == 2
    # frames the client cannot apply are refused, where the SDK writes them
    with pytest.raises(EncodeError, match="selector"):
        datastar_patch_elements(mode="remove")
    with pytest.raises(EncodeError, match="namespace"):
        datastar_patch_elements("<p/>", namespace="")
    with pytest.raises(EncodeError, match="signals"):
        datastar_patch_signals("")


@pytest.mark.parametrize(
    "location",
    ["javascript:alert(1)", " JavaScript:alert(1)", "java\tscript:alert(1)", "data:text/html,x"],
)
def test_redirect_refuses_locations_that_would_run_code(location: str) -> None:
    with pytest.raises(EncodeError, match="relative, http: or https:"):
        datastar_redirect(location)
