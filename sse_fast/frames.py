r"""Exact frames for the front ends: Datastar, the htmx sse extension, heartbeats;
and frames with another line end (``\r\n`` or ``\r``) for the framework
adapters that accept one (``sse_fast.starlette``, ``sse_fast.aiohttp``).

Every helper returns the bytes of one SSE frame, built with the package's
encoder (Cython or pure, whichever is loaded), so the same validation applies:
CR/LF in single-line values is refused with ``EncodeError``, never stripped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from ._core import encode
from ._core.errors import EncodeError

__all__ = [
    "DATASTAR_DEFAULT_RETRY",
    "DATASTAR_MODES",
    "DATASTAR_NAMESPACES",
    "LINE_ENDS",
    "datastar_execute_script",
    "datastar_patch_elements",
    "datastar_patch_signals",
    "datastar_redirect",
    "datastar_remove_elements",
    "heartbeat",
    "htmx_fragment",
    "line_end",
]

#: The retry Datastar clients assume; the field is only written when it differs.
DATASTAR_DEFAULT_RETRY = 1000
#: the ``mode`` values ``datastar_patch_elements`` takes
DATASTAR_MODES = frozenset(
    {"outer", "inner", "replace", "prepend", "append", "before", "after", "remove"}
)
#: the ``namespace`` values ``datastar_patch_elements`` takes
DATASTAR_NAMESPACES = frozenset({"html", "svg", "mathml"})
_LINE_END = re.compile(r"\r\n|\r|\n")
#: the line ends the SSE format allows
LINE_ENDS = ("\r\n", "\r", "\n")


def line_end(sep: str | None, default: str = "\n") -> str:
    """``sep`` (or ``default`` when None), or ``ValueError`` if it is not a line end."""
    if sep is None:
        return default
    if sep not in LINE_ENDS:
        raise ValueError(f"sep must be one of: \\r\\n, \\r, \\n, got: {sep!r}")
    return sep


def _single_line(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise EncodeError(field, f"must be str, not {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise EncodeError(field, "must be one line (no CR or LF)")
    return value


def _datastar_retry(retry: int | None) -> int | None:
    return None if retry == DATASTAR_DEFAULT_RETRY else retry


def _datastar_id(id: str | int | None) -> str | int | None:
    # an empty id is no id, as the SDK has it (an empty ``id:`` line would reset the
    # client's last event id)
    return None if id == "" else id


def _lines(text: str) -> list[str]:
    """``text`` cut at the SSE line ends (CRLF, CR, LF); a line end at the very end
    ends the last line rather than starting an empty one (as ``str.splitlines``,
    which datastar-py uses, does; it also cuts at other characters, such as
    U+2028, which the SSE format keeps inside a line: here they stay)."""
    if not text:
        return []
    lines = _LINE_END.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def datastar_patch_elements(
    elements: str | None = None,
    *,
    selector: str | None = None,
    mode: str = "outer",
    use_view_transition: bool = False,
    view_transition_selector: str | None = None,
    namespace: str = "html",
    id: str | int | None = None,
    retry: int | None = DATASTAR_DEFAULT_RETRY,
) -> bytes:
    """A ``datastar-patch-elements`` frame, byte for byte what the Datastar Python
    SDK (``datastar-py`` 1.0) writes for the same arguments.

    ``elements`` is HTML (one ``elements`` line per line; a final line end adds
    none); ``mode`` is one of ``DATASTAR_MODES`` (``outer`` is the default and is
    not written); ``mode="remove"`` needs a ``selector`` or ``elements``. Lines
    are written in the SDK's order: ``mode``, ``selector``,
    ``useViewTransition``, ``viewTransitionSelector``, ``namespace``,
    ``elements``; empty values are left out.
    """
    if mode not in DATASTAR_MODES:
        raise EncodeError(
            "mode", f"must be one of {', '.join(sorted(DATASTAR_MODES))}; got {mode!r}"
        )
    if namespace not in DATASTAR_NAMESPACES:
        raise EncodeError("namespace", f"must be one of html, mathml, svg; got {namespace!r}")
    if elements is not None and not isinstance(elements, str):
        raise EncodeError("elements", f"must be str (HTML), not {type(elements).__name__}")
    if elements is None and mode != "remove":
        raise EncodeError("elements", f"is required with mode {mode!r}")
    if mode == "remove" and not elements and not selector:
        raise EncodeError("selector", "mode 'remove' needs a selector or elements")
    lines = []
    if mode != "outer":
        lines.append("mode " + mode)
    if selector:
        lines.append("selector " + _single_line("selector", selector))
    if use_view_transition:
        lines.append("useViewTransition true")
    if view_transition_selector:
        lines.append(
            "viewTransitionSelector "
            + _single_line("view_transition_selector", view_transition_selector)
        )
    if namespace != "html":
        lines.append("namespace " + namespace)
    if elements:
        lines.extend("elements " + line for line in _lines(elements))
    return encode(
        "\n".join(lines) if lines else None,  # nothing to say: no data line, as the SDK
        event="datastar-patch-elements",
        id=_datastar_id(id),
        retry=_datastar_retry(retry),
    )


def datastar_remove_elements(
    selector: str, *, id: str | int | None = None, retry: int | None = DATASTAR_DEFAULT_RETRY
) -> bytes:
    """A ``datastar-patch-elements`` frame that removes what ``selector`` matches."""
    return datastar_patch_elements(selector=selector, mode="remove", id=id, retry=retry)


def _attribute(text: str) -> str:
    """``text`` escaped for an HTML attribute value, as datastar-py escapes it."""
    return (
        text.replace("&", "&amp;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
        .replace(">", "&gt;")
        .replace("<", "&lt;")
    )


def datastar_execute_script(
    script: str,
    *,
    auto_remove: bool = True,
    attributes: Mapping[str, str] | Sequence[str] | None = None,
    id: str | int | None = None,
    retry: int | None = DATASTAR_DEFAULT_RETRY,
) -> bytes:
    """A frame that runs ``script`` in the page: a ``<script>`` appended to
    ``body`` (Datastar 1.0 has no event of its own for scripts), removed again
    once run unless ``auto_remove`` is false. ``attributes``: a mapping (values
    escaped) or ready-made attribute strings. ``script`` is JavaScript as is: it
    must not contain ``</script>``."""
    if not isinstance(script, str):
        raise EncodeError("script", f"must be str, not {type(script).__name__}")
    if "</script" in script.lower():
        raise EncodeError("script", "must not contain '</script' (it would end the element)")
    attrs = ' data-effect="el.remove()"' if auto_remove else ""
    if attributes:
        if isinstance(attributes, Mapping):
            attrs += " " + " ".join(
                f'{_attribute(k)}="{_attribute(v)}"' for k, v in attributes.items()
            )
        else:
            attrs += " " + " ".join(attributes)
    return datastar_patch_elements(
        f"<script{attrs}>{script}</script>", selector="body", mode="append", id=id, retry=retry
    )


_JS_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    "\n": "\\n",
    "\r": "\\r",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
    "<": "\\x3C",
}
_JS_SPECIAL = re.compile("[\\\\'\n\r\u2028\u2029<]")


def datastar_redirect(location: str) -> bytes:
    """A frame that sends the page to ``location`` (a script, as datastar-py's
    ``redirect``). The location is escaped inside its JavaScript string (quotes,
    backslashes, line ends, ``<``), which datastar-py does not do; for a plain
    URL the bytes are the same. Only a relative, ``http:`` or ``https:`` location
    is taken: a ``javascript:`` one (say, from a ``?next=`` parameter) would run
    in the page."""
    if not isinstance(location, str):
        raise EncodeError("location", f"must be str, not {type(location).__name__}")
    scheme = urlsplit(location).scheme.lower()  # as browsers read it (tabs, spaces stripped)
    if scheme not in ("", "http", "https"):
        raise EncodeError(
            "location", f"must be a relative, http: or https: URL, not a {scheme}: one"
        )
    quoted = _JS_SPECIAL.sub(lambda m: _JS_ESCAPES[m.group()], location)
    return datastar_execute_script(f"setTimeout(() => window.location = '{quoted}')")


def datastar_patch_signals(
    signals: Mapping[str, Any] | str,
    *,
    only_if_missing: bool = False,
    id: str | int | None = None,
    retry: int | None = DATASTAR_DEFAULT_RETRY,
) -> bytes:
    """A ``datastar-patch-signals`` frame carrying an RFC 7386 JSON merge patch.

    ``signals`` is a mapping (serialised with orjson on one line) or a JSON
    object as text (checked, and split into one ``signals`` line per line).
    Byte for byte datastar-py's frame, except that orjson writes non-ASCII
    characters as UTF-8 where datastar-py's ``json.dumps`` writes ``\\uXXXX``
    escapes (the same JSON once parsed) and some floats differently (``1e-7``
    for ``1e-07``).
    """
    if isinstance(signals, str):
        try:
            parsed = orjson.loads(signals)
        except orjson.JSONDecodeError as exc:
            raise EncodeError("signals", f"is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise EncodeError("signals", "must be a JSON object (a merge patch)")
        text = signals
    elif isinstance(signals, Mapping):
        try:
            text = orjson.dumps(dict(signals)).decode()
        except TypeError as exc:
            raise EncodeError("signals", f"cannot serialise as JSON: {exc}") from None
    else:
        raise EncodeError(
            "signals", f"must be a mapping or JSON text, not {type(signals).__name__}"
        )
    lines = ["onlyIfMissing true"] if only_if_missing else []
    lines.extend("signals " + line for line in _lines(text))
    return encode(
        "\n".join(lines),
        event="datastar-patch-signals",
        id=_datastar_id(id),
        retry=_datastar_retry(retry),
    )


def htmx_fragment(
    html: str,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
) -> bytes:
    """An HTML fragment for the htmx sse extension (``sse-swap`` on ``event``,
    ``message`` when None). Multi-line HTML becomes several ``data:`` lines,
    which the browser joins back with LF."""
    if not isinstance(html, str):
        raise EncodeError("data", f"HTML fragment must be str, not {type(html).__name__}")
    return encode(html, event=event, id=id, retry=retry)


def heartbeat(comment: str = "") -> bytes:
    """A comment frame that keeps intermediaries from closing an idle stream."""
    return encode(comment=comment)
