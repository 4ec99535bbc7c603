"""Exact frames for the front ends: Datastar, the htmx sse extension, heartbeats;
and frames with another line end (``\r\n`` or ``\r``) for the framework
adapters that accept one (``sse_fast.starlette``, ``sse_fast.aiohttp``).

Every helper returns the bytes of one SSE frame, built with the package's
encoder (Cython or pure, whichever is loaded), so the same validation applies:
CR/LF in single-line values is refused with ``EncodeError``, never stripped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ._core import encode
from ._errors import EncodeError

__all__ = [
    "DATASTAR_DEFAULT_RETRY",
    "DATASTAR_MODES",
    "LINE_ENDS",
    "datastar_patch_elements",
    "datastar_patch_signals",
    "heartbeat",
    "htmx_fragment",
    "line_end",
    "with_line_end",
]

#: The retry Datastar clients assume; the field is only written when it differs.
DATASTAR_DEFAULT_RETRY = 1000
DATASTAR_MODES = frozenset(
    {"outer", "inner", "replace", "prepend", "append", "before", "after", "remove"}
)
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


def with_line_end(frame: bytes, sep: str) -> bytes:
    """An encoded ``frame`` with ``sep`` line ends. The encoder ends lines with LF
    and leaves no CR inside a frame (it splits values at CR, LF and CRLF), so
    each LF is a line end."""
    return frame if sep == "\n" else frame.replace(b"\n", sep.encode())


def _single_line(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise EncodeError(field, f"must be str, not {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise EncodeError(field, "must be one line (no CR or LF)")
    return value


def _datastar_retry(retry: int | None) -> int | None:
    return None if retry == DATASTAR_DEFAULT_RETRY else retry


def datastar_patch_elements(
    elements: str | None = None,
    *,
    selector: str | None = None,
    mode: str = "outer",
    use_view_transition: bool = False,
    namespace: str = "html",
    id: str | int | None = None,
    retry: int | None = DATASTAR_DEFAULT_RETRY,
) -> bytes:
    """A ``datastar-patch-elements`` frame.

    ``elements`` is HTML (several lines become several ``elements`` lines);
    ``mode`` is one of ``DATASTAR_MODES`` (``outer`` is the default and is not
    written); ``mode="remove"`` needs a ``selector`` or ``elements``.
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
    if mode == "remove" and elements is None and selector is None:
        raise EncodeError("selector", "mode 'remove' needs a selector or elements")
    lines = []
    if selector is not None:
        lines.append("selector " + _single_line("selector", selector))
    if mode != "outer":
        lines.append("mode " + mode)
    if use_view_transition:
        lines.append("useViewTransition true")
    if namespace != "html":
        lines.append("namespace " + namespace)
    if elements is not None:
        lines.extend("elements " + line for line in _LINE_END.split(elements))
    return encode(
        "\n".join(lines), event="datastar-patch-elements", id=id, retry=_datastar_retry(retry)
    )


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
    lines.extend("signals " + line for line in _LINE_END.split(text))
    return encode(
        "\n".join(lines), event="datastar-patch-signals", id=id, retry=_datastar_retry(retry)
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
