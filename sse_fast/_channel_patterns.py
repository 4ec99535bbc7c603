"""Channel patterns: a stream's name and its pattern of topics, checked and
compiled (``item:{item_id}`` to a regex and its parameters). The server's
typed channels (``schemas.py``, where a stream is described) and ``sse-fast
codegen`` check them alike, here; ``SchemaError`` is public as
``sse_fast.schemas.SchemaError``.
"""

from __future__ import annotations

import re

from ._companions import COMPANION
from ._core.request import TOPIC_CHARACTERS

__all__ = [
    "PARAMETER",
    "SEGMENT",
    "STREAM_NAME",
    "UNDER",
    "SchemaError",
    "check_stream_name",
    "compile_channel",
    "is_pattern_channel",
]

#: a stream's name (it names the generated subscribe function)
STREAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: a parameter in a channel pattern: ``{name}`` or ``{name:kind}``
PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}")
#: what the ``*`` of a pattern channel matches: the rest of a topic, ``/`` included, but
#: not a presence companion's (``<topic>/presence``: the hub's own news, never typed;
#: a topic pattern never matches one either)
UNDER = (
    f"(?!(?:[{re.escape(TOPIC_CHARACTERS)}]*/)?{re.escape(COMPANION[1:])}$)"
    f"[{re.escape(TOPIC_CHARACTERS)}]+"
)
#: what a parameter of each kind matches (inside a topic)
#: (written so that it reads the same as a Python and an ECMAScript regex: JSON Schema)
SEGMENT = "[A-Za-z0-9._~@!$&'()+,;=%-]+"
_KINDS = {"str": SEGMENT, "int": "[0-9]+"}


class SchemaError(ValueError):
    """A declaration that cannot work (a bad pattern, a type that is no Struct,
    two events of one name); raised when it is made, never on a publish."""


SchemaError.__module__ = "sse_fast.schemas"  # its public name, for pickle and logs


def check_stream_name(name: object) -> str:
    """``name`` if it can name a stream, else SchemaError saying what a name is."""
    if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
        raise SchemaError(
            f"stream name {name!r}: a letter, then letters, digits or _ "
            "(it names the generated subscribe function)"
        )
    return name


def compile_channel(stream: str, channel: object) -> tuple[re.Pattern[str], dict[str, str]]:
    """The regex of the topics of stream ``stream``'s channel pattern and its
    parameters (name -> kind, in order); SchemaError saying what is wrong with it.

    A pattern is topic characters (``TOPIC_CHARACTERS``) and ``{name}`` or
    ``{name:int}`` parameters with a separator between two of them, and may end in
    ``/*``: a pattern stream, whose topics are every topic under it
    (``user/{user_id:int}/*``; ``is_pattern_channel``); nothing else. ``sse-fast
    codegen`` lets into a client only what passes here."""
    if not isinstance(channel, str) or not channel:
        raise SchemaError(f"stream {stream!r}: the channel pattern must be a non-empty str")
    tail = ""
    if is_pattern_channel(channel):
        channel, tail = channel[:-1], UNDER  # "user/{user_id}/" and what goes under it
    if "*" in channel or "?" in channel:
        raise SchemaError(
            f"stream {stream!r}: channel {channel + ('*' if tail else '')!r}: a channel may "
            "end in /* (every topic under it), and has no other * or ?"
        )
    parameters: dict[str, str] = {}
    out, at = [], 0
    for match in PARAMETER.finditer(channel):
        out.append(_channel_literal(stream, channel, channel[at : match.start()]))
        parameter, kind = match.group(1), match.group(2) or "str"
        if kind not in _KINDS:
            raise SchemaError(
                f"stream {stream!r}: parameter {{{parameter}:{kind}}}: "
                "kinds are str (the default) and int"
            )
        if parameter in parameters:
            raise SchemaError(f"stream {stream!r}: parameter {parameter!r} appears twice")
        if parameters and match.start() == at:
            raise SchemaError(
                f"stream {stream!r}: parameters {{...}}{{...}} need a separator between them"
            )
        parameters[parameter] = kind
        out.append(f"(?P<{parameter}>{_KINDS[kind]})")
        at = match.end()
    out.append(_channel_literal(stream, channel, channel[at:]))
    return re.compile("".join(out) + tail), parameters


def is_pattern_channel(channel: str) -> bool:
    """Whether ``channel`` declares a pattern stream (it ends in ``/*``)."""
    return channel.endswith("/*") and len(channel) > 2


def _channel_literal(stream: str, channel: str, text: str) -> str:
    """``text``, a channel pattern's text between parameters, as a regex."""
    if "{" in text or "}" in text:
        raise SchemaError(
            f"stream {stream!r}: channel {channel!r} has a brace that is no "
            "{parameter} or {parameter:int}"
        )
    stray = set(text) - set(TOPIC_CHARACTERS)
    if stray:
        raise SchemaError(
            f"stream {stream!r}: channel {channel!r} has characters topics cannot "
            f"have: {''.join(sorted(stray))!r}"
        )
    return re.escape(text)
