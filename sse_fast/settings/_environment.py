"""The settings in the environment: a setting's variable is ``SSE_FAST_`` plus its
name in upper case; its text is converted to the field's type (a bool is
1/true/yes/on or 0/false/no/off); a variable with the prefix that names no
setting is reported with the closest real name. ``sse-fast serve`` hands its
settings to its workers this way, and they read them back.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ._checks import SettingsError

#: what the environment variable of a setting starts with (then its name in upper case)
ENV_PREFIX = "SSE_FAST_"

#: Variables with the prefix that are not settings: read at build and import time.
OTHER_VARIABLES = frozenset({"SSE_FAST_NO_EXTENSIONS", "SSE_FAST_CYTHON_TRACE"})


def read_variables(
    fields: Iterable[dataclasses.Field[Any]], environ: Mapping[str, str]
) -> dict[str, Any]:
    """The values ``environ``'s variables give ``fields`` (empty ones left out),
    each converted to its field's type; ``SettingsError`` naming a variable
    whose text is not one."""
    values: dict[str, Any] = {}
    for f in fields:
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None and raw != "":
            values[f.name] = _convert(f, raw, source=ENV_PREFIX + f.name.upper())
    return values


def as_variables(settings: Any) -> dict[str, str]:
    """The fields of the dataclass instance ``settings`` as ``SSE_FAST_*`` variables
    (a bool as 1 or 0), which ``read_variables`` reads back to the same values."""
    env = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        env[ENV_PREFIX + f.name.upper()] = (
            ("1" if value else "0") if isinstance(value, bool) else str(value)
        )
    return env


def misspelt(environ: Mapping[str, str], fields: Iterable[dataclasses.Field[Any]]) -> list[str]:
    """``environ``'s ``SSE_FAST_*`` variables that set none of ``fields`` and are
    none of ``OTHER_VARIABLES``, each with the closest real name when there is one."""
    known = {ENV_PREFIX + f.name.upper() for f in fields} | OTHER_VARIABLES
    suffixes = [k[len(ENV_PREFIX) :] for k in sorted(known)]
    out = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name[len(ENV_PREFIX) :], suffixes, n=1, cutoff=0.8)
            out.append(f"{name} (did you mean {ENV_PREFIX}{close[0]}?)" if close else name)
    return out


def _convert(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
    )
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{source}={raw!r} is not a valid {kind.__name__}") from None
