"""TypeScript: interfaces, decoders that check every field, and one typed
subscribe function per stream on top of ``EventSource``.

The output compiles with ``tsc --strict`` (checked by the tests) and has no
imports. For each stream ``comments`` on ``item:{item_id}``:

* ``commentsTopic(itemId)``: the topic (parameters checked);
* ``subscribeToComments(itemId, {CommentAdded(event, id) {...}, ...}, options)``:
  an ``EventSource`` on the edge's ``/events``, each event decoded into its
  interface (a mismatch goes to ``onError`` as a ``DecodeError`` with the
  path, and no handler sees it), ``onMissed`` when the edge could not resume,
  ``onDisconnect`` when it ended the stream. The browser resumes by itself
  with ``Last-Event-ID`` after a lost connection; ``options.lastEventId``
  resumes a new subscription (the ``lastEventId`` query parameter).

What of the schema goes where (``_model.py`` checks names and channels): text
in a string literal or a quoted property name is written by ``_string``
(JSON's escapes, every non-ASCII character and ``<`` as ``\\uXXXX``: nothing
closes the literal, ends a line or reads as ``</script>``); text in a comment by
``_comment`` (one line of printable characters, no ``*/`` or ``</``); a property named
``__proto__`` is created with a computed key (``["__proto__"]: value``), and
decoders read and write only own properties, so a field or a map key of that
name is data, never a prototype.
"""

from __future__ import annotations

import json
import re
import unicodedata

from .._channel_patterns import SEGMENT
from ..protocol import DISCONNECT, MISSED
from ._model import Model, Parameter, Record, Stream, Type, camel, pascal

__all__ = [
    "PRELUDE",
    "write",
]

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")

#: the code every generated file carries: ``DecodeError``, the primitive decoders and ``subscribe``
#: on ``EventSource``
PRELUDE = (
    """\
export class DecodeError extends Error {
  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${path}: ${problem}`);
    this.name = "DecodeError";
  }
}

type Decoder<T> = (value: unknown, path: string) => T;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function int(value: unknown, path: string): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new DecodeError(path, "expected an integer");
  }
  return value;
}

function num(value: unknown, path: string): number {
  if (typeof value !== "number") throw new DecodeError(path, "expected a number");
  return value;
}

function str(value: unknown, path: string): string {
  if (typeof value !== "string") throw new DecodeError(path, "expected a string");
  return value;
}

function bool(value: unknown, path: string): boolean {
  if (typeof value !== "boolean") throw new DecodeError(path, "expected true or false");
  return value;
}

function nil(value: unknown, path: string): null {
  if (value !== null) throw new DecodeError(path, "expected null");
  return null;
}

function list<T>(value: unknown, path: string, item: Decoder<T>): T[] {
  if (!Array.isArray(value)) throw new DecodeError(path, "expected an array");
  return value.map((each, index) => item(each, `${path}[${index}]`));
}

function dict<T>(value: unknown, path: string, item: Decoder<T>): Record<string, T> {
  if (!isObject(value)) throw new DecodeError(path, "expected an object");
  const out: Record<string, T> = {};
  for (const [key, each] of Object.entries(value)) {
    // an own property even for the key __proto__ (out[key] = ... would set the prototype)
    Object.defineProperty(out, key, {
      value: item(each, `${path}.${key}`),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

function own(object: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(object, key) ? object[key] : undefined;
}

function optional<T>(value: unknown, path: string, item: Decoder<T>): T | null {
  return value === null ? null : item(value, path);
}

function oneOf<T extends string | number>(value: unknown, path: string, values: readonly T[]): T {
  if (!values.includes(value as T)) {
    throw new DecodeError(path, `expected one of ${JSON.stringify(values)}`);
  }
  return value as T;
}

function record(value: unknown, path: string): Record<string, unknown> {
  if (!isObject(value)) throw new DecodeError(path, "expected an object");
  return value;
}

function segment(name: string, value: string): string {
  if (!/SEGMENT/.test(value)) {
    throw new RangeError(`${name}: ${JSON.stringify(value)} is no topic segment (no / or :)`);
  }
  return value;
}

function whole(name: string, value: number): string {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${name}: ${value} is no whole number`);
  }
  return String(value);
}

/** A live subscription: `close()` ends it. */
export interface Subscription {
  close(): void;
  /** the id of the last event received (where a new subscription would resume) */
  readonly lastEventId: string | null;
}

export interface SubscribeOptions {
  /** the edge's address, before /events (default: this page's origin) */
  baseUrl?: string;
  /** resume after this event id; reconnects after a lost connection resume by themselves */
  lastEventId?: string;
  /** send cookies to another origin (CORS with credentials) */
  withCredentials?: boolean;
}

export interface StreamHandlers {
  onOpen?: () => void;
  /** a lost connection (the browser reconnects), or an event that did not decode */
  onError?: (error: Event | DecodeError) => void;
  /** the edge could not resume from the id asked for: events since then are lost */
  onMissed?: (missed: { reason: string; last_event_id: string | null }) => void;
  /** the edge ended the stream (draining, lagged, token expired, ...) */
  onDisconnect?: (disconnect: { reason: string; [detail: string]: unknown }) => void;
}

function subscribe(
  topic: string,
  decoders: Record<string, Decoder<unknown>>,
  handlers: StreamHandlers,
  options: SubscribeOptions,
): Subscription {
  const base = (options.baseUrl ?? "").replace(/\\/+$/, "");
  let url = `${base}/events?topic=${encodeURIComponent(topic)}`;
  if (options.lastEventId) url += `&lastEventId=${encodeURIComponent(options.lastEventId)}`;
  const source = new EventSource(url, { withCredentials: options.withCredentials ?? false });
  let last: string | null = options.lastEventId ?? null;
  type Handler = ((value: unknown, id: string) => void) | undefined;
  const named = handlers as unknown as Record<string, Handler>;
  source.onopen = () => handlers.onOpen?.();
  source.onerror = (event) => handlers.onError?.(event);
  for (const [name, decode] of Object.entries(decoders)) {
    source.addEventListener(name, (event) => {
      const message = event as MessageEvent<string>;
      last = message.lastEventId || last;
      let value: unknown;
      try {
        value = decode(JSON.parse(message.data), "$");
      } catch (error) {
        handlers.onError?.(
          error instanceof DecodeError ? error : new DecodeError("$", String(error)),
        );
        return;
      }
      named[name]?.(value, message.lastEventId);
    });
  }
  source.addEventListener("MISSED", (event) => {
    last = (event as MessageEvent<string>).lastEventId || last;
    handlers.onMissed?.(JSON.parse((event as MessageEvent<string>).data));
  });
  source.addEventListener("DISCONNECT", (event) => {
    source.close();
    handlers.onDisconnect?.(JSON.parse((event as MessageEvent<string>).data));
  });
  return {
    close: () => source.close(),
    get lastEventId() {
      return last;
    },
  };
}
""".replace("SEGMENT", f"^{SEGMENT}$".replace("/", "\\/"))
    .replace('"MISSED"', json.dumps(MISSED))
    .replace('"DISCONNECT"', json.dumps(DISCONNECT))
)


def _string(value: str | int) -> str:
    """``value`` as a JavaScript literal: JSON's escapes, and ``\\uXXXX`` for every
    non-ASCII character (U+2028 and U+2029 end a line in older JavaScript) and for
    ``<`` (no ``</script>`` when the output is pasted into a page)."""
    return json.dumps(value, ensure_ascii=True).replace("<", "\\u003c")


def _comment(text: str) -> str:
    """``text`` to go inside ``/** ... */`` (which tsc keeps in the JavaScript): one
    line, no ``*/`` to end the comment, no ``</`` or ``<!--`` to end a page's
    ``<script>``, and no control, format or separator character (a line break, a
    terminal's escape, a bidirectional override that shows the code around it other
    than it is)."""
    text = "".join(" " if c != " " and unicodedata.category(c)[0] in "CZ" else c for c in text)
    text = " ".join(text.split()).replace("*/", "*\\/")
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _property(name: str) -> str:
    """A property's name in an interface."""
    return name if _IDENTIFIER.fullmatch(name) else _string(name)


def _key(name: str) -> str:
    """A property's name in an object literal: ``__proto__: x`` (bare or quoted) would
    set the object's prototype; a computed key makes an own property."""
    return f"[{_string(name)}]" if name == "__proto__" else _property(name)


def _type(kind: Type) -> str:
    if kind.kind in ("int", "float"):
        return "number"
    if kind.kind in ("str", "bool", "null"):
        return {"str": "string", "bool": "boolean", "null": "null"}[kind.kind]
    if kind.kind == "any":
        return "unknown"
    if kind.kind == "ref":
        return kind.ref
    if kind.kind == "enum":
        return " | ".join(_string(v) for v in kind.values)
    assert kind.item is not None
    inner = _type(kind.item)
    if kind.kind == "list":
        return f"({inner})[]" if " " in inner else f"{inner}[]"
    if kind.kind == "dict":
        return f"Record<string, {inner}>"
    return f"{inner} | null"  # optional


def _decoder(kind: Type, value: str, path: str, depth: int = 0) -> str:
    simple = {"int": "int", "float": "num", "str": "str", "bool": "bool", "null": "nil"}
    if kind.kind in simple:
        return f"{simple[kind.kind]}({value}, {path})"
    if kind.kind == "any":
        return value
    if kind.kind == "ref":
        return f"decode{kind.ref}({value}, {path})"
    if kind.kind == "enum":
        values = ", ".join(_string(v) for v in kind.values)
        return f"oneOf({value}, {path}, [{values}] as const)"
    assert kind.item is not None
    v, p = f"v{depth}", f"p{depth}"
    inner = _decoder(kind.item, v, p, depth + 1)
    helper = {"list": "list", "dict": "dict", "optional": "optional"}[kind.kind]
    return f"{helper}({value}, {path}, ({v}, {p}) => {inner})"


def _interface(record: Record) -> list[str]:
    lines = [f"export interface {record.name} {{"]
    lines += [f"  {_property(f.name)}: {_type(f.type)};" for f in record.fields]
    return [*lines, "}", ""]


def _decode_function(record: Record) -> list[str]:
    lines = [
        f'export function decode{record.name}(value: unknown, path = "$"): {record.name} {{',
        "  const object = record(value, path);",
        "  return {",
    ]
    for f in record.fields:
        value = f"own(object, {_string(f.name)})"
        path = f"path + {_string('.' + f.name)}"
        lines.append(f"    {_key(f.name)}: {_decoder(f.type, value, path)},")
    return [*lines, "  };", "}", ""]


def _stream(stream: Stream) -> list[str]:
    name = pascal(stream.name)
    arguments = ", ".join(
        f"{camel(p.name)}: {'number' if p.kind == 'int' else 'string'}" for p in stream.parameters
    )
    pieces = []
    for part in stream.parts:
        if isinstance(part, Parameter):
            check = "whole" if part.kind == "int" else "segment"
            pieces.append(f"{check}({_string(camel(part.name))}, {camel(part.name)})")
        else:
            pieces.append(_string(part))
    names = ", ".join(camel(p.name) for p in stream.parameters)
    description = _comment(stream.description)
    comment = f"{description} " if description else ""
    lines = [
        f"/** {_comment(f'The {stream.what} of stream {stream.name} ({stream.channel}).')} */",
        f"export function {camel(stream.name)}Topic({arguments}): string {{",
        f"  return {' + '.join(pieces)};",
        "}",
        "",
        f"export interface {name}Handlers extends StreamHandlers {{",
    ]
    lines += [
        f"  {event}?: (event: {record}, id: string) => void;" for event, record in stream.events
    ]
    lines += [
        "}",
        "",
        f"/** {comment}{_comment(f'(stream {stream.name}, channel {stream.channel})')} */",
        f"export function subscribeTo{name}(",
        *([f"  {a}," for a in arguments.split(", ")] if arguments else []),
        f"  handlers: {name}Handlers,",
        "  options: SubscribeOptions = {},",
        "): Subscription {",
        "  return subscribe(",
        f"    {camel(stream.name)}Topic({names}),",
        "    {",
        *[f"      {event}: decode{record}," for event, record in stream.events],
        "    },",
        "    handlers,",
        "    options,",
        "  );",
        "}",
        "",
    ]
    return lines


def write(model: Model) -> str:
    """The TypeScript module for ``model``: an interface and a decoder per record, then per stream
    its topic and subscribe functions."""
    lines = [
        "// Generated by `sse-fast codegen --lang typescript` from the edge's /schema.",
        "// Do not edit: generate it again when the declarations change.",
        "",
    ]
    for record in model.records.values():
        lines += _interface(record)
    lines.append(PRELUDE)
    for record in model.records.values():
        lines += _decode_function(record)
    for stream in model.streams:
        lines += _stream(stream)
    return "\n".join(lines).rstrip("\n") + "\n"
