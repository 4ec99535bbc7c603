"""The ``GET /schema`` document read into what the generators write: streams
(channel pattern, parameters, events) and records (fields and their types).

Types the generators know: integer, number, string, boolean, null, arrays,
string-keyed maps (``dict[str, T]``), records (``$ref``), ``T | None``, enums
and constants of strings or integers, and anything (``Any``). Others (tuples,
unions of several types) are refused with the path to them: a generated
client would have to guess.

The document may come from anywhere (``--schema-url``: a spoofed edge, a
tampered file), and what it says is pasted into code users ship. So every string
of it that reaches the output is either checked here or escaped by the
generator for where it goes:

* checked here: stream names and channels exactly as the server checks them
  (``sse_fast._channel_patterns.check_stream_name``, ``compile_channel``: a channel is topic
  characters and ``{parameter}`` or ``{parameter:int}``, nothing that could
  close a comment or a string); record, event and parameter names are ASCII
  identifiers that do not clash with the generated code's own names; every
  ``$ref`` names a record; every string is text a UTF-8 file can hold;
* escaped by the generators: JSON field names, enum values and descriptions,
  which may be any text (a field named ``__proto__`` or ``*/`` is legal JSON and
  legal msgspec), go into string literals and comments escaped for the language,
  and into identifiers only through a mapping to ASCII letters, digits and ``_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .._channel_patterns import PARAMETER, check_stream_name, compile_channel, is_pattern_channel
from .._core.request import TOPIC_CHARACTERS
from ..schemas import SchemaError

__all__ = [
    "CHANNEL_RULE",
    "HANDLER_KEYS",
    "OBJECT_PROPERTIES",
    "RESERVED_PARAMETERS",
    "RESERVED_TYPES",
    "CodegenError",
    "Field",
    "Model",
    "Parameter",
    "Record",
    "Stream",
    "Type",
    "camel",
    "pascal",
    "read",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CodegenError(ValueError):
    """A schema a client cannot be generated from (what, and where)."""


@dataclass(frozen=True)
class Type:
    """A field's type: its ``kind``, the ``item`` type of a list, map or optional, the record a
    ``ref`` names, and an enum's (or constant's) ``values``."""

    kind: str  # int float str bool null any list dict optional ref enum
    item: Type | None = None  # list, dict, optional
    ref: str = ""  # ref: the record's name
    values: tuple[Any, ...] = ()  # enum


@dataclass
class Field:
    """A record's field: its JSON name and its type."""

    name: str  # as on the wire (JSON)
    type: Type


@dataclass
class Record:
    """A record (a ``$defs`` object): its name and fields."""

    name: str
    fields: list[Field]


@dataclass
class Parameter:
    """A channel's parameter: its name and kind (``"str"`` or ``"int"``)."""

    name: str
    kind: str  # "str" or "int"


@dataclass
class Stream:
    """A declared stream: its name, channel pattern and description, the channel's parameters, and
    its events as (event name, record name)."""

    name: str
    channel: str
    description: str
    parameters: list[Parameter]
    #: the channel as literal text and parameters, in order
    parts: list[str | Parameter]
    events: list[tuple[str, str]]  # (event name, record name)

    @property
    def what(self) -> str:
        """What its topic function gives: ``topic pattern`` for a pattern stream (its
        channel ends in ``/*``: it subscribes to every topic under it), else ``topic``."""
        return "topic pattern" if is_pattern_channel(self.channel) else "topic"


@dataclass
class Model:
    """What a client is generated from: the streams, and the records by name."""

    streams: list[Stream] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)


#: names the generated code uses itself (TypeScript's and Elm's preludes, their
#: globals): a record of one of these names would not compile
RESERVED_TYPES = frozenset(
    [
        "Record",
        "Event",
        "MessageEvent",
        "EventSource",
        "Decoder",
        "Subscription",
        "SubscribeOptions",
        "StreamHandlers",
        "DecodeError",
        "Error",
        "RangeError",
        "Object",
        "Array",
        "String",
        "Number",
        "Boolean",
        "Promise",
        "Map",
        "Set",
        "JSON",
        "Date",
        "Math",
        "SubscribeRequest",
        "Dict",
        "Decode",
        "List",
        "Maybe",
        "Result",
        "Cmd",
        "Sub",
        "Int",
        "Float",
        "Bool",
        "Char",
        "Never",
        "Value",
    ]
)
#: the handlers every stream's TypeScript handlers have besides one per event
HANDLER_KEYS = frozenset({"onOpen", "onError", "onMissed", "onDisconnect"})
#: what every JavaScript object has: an event of one of these names would find a
#: handler on any handlers object (``__proto__`` would even set its prototype)
OBJECT_PROPERTIES = frozenset(
    [
        "__proto__",
        "__defineGetter__",
        "__defineSetter__",
        "__lookupGetter__",
        "__lookupSetter__",
        "constructor",
        "hasOwnProperty",
        "isPrototypeOf",
        "propertyIsEnumerable",
        "toLocaleString",
        "toString",
        "valueOf",
    ]
)
#: parameter names the generated functions use, or that JavaScript reserves
RESERVED_PARAMETERS = frozenset(
    [
        "handlers",
        "options",
        "send",
        "lastEventId",
        "segment",
        "whole",
        "subscribe",
        "record",
        "list",
        "dict",
        "optional",
        "oneOf",
        "int",
        "num",
        "str",
        "bool",
        "nil",
        "isObject",
        "own",
        "decodeWith",
        "andMap",
        "oneOfInts",
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "debugger",
        "default",
        "delete",
        "do",
        "else",
        "enum",
        "export",
        "extends",
        "false",
        "finally",
        "for",
        "function",
        "if",
        "import",
        "in",
        "instanceof",
        "new",
        "null",
        "return",
        "super",
        "switch",
        "this",
        "throw",
        "true",
        "try",
        "typeof",
        "var",
        "void",
        "while",
        "with",
        "yield",
        "let",
        "static",
        "implements",
        "interface",
        "package",
        "private",
        "protected",
        "public",
        "await",
        "arguments",
        "eval",
    ]
)


def read(schema: dict[str, Any]) -> Model:
    """The model of a ``GET /schema`` document, every name and type checked; ``CodegenError``
    saying what, and where, for a document a client cannot be generated from."""
    if not isinstance(schema, dict) or not isinstance(schema.get("streams"), dict):
        raise CodegenError("not a /schema document: it has no 'streams' object")
    definitions = schema.get("$defs", {})
    model = Model()
    enums = {}  # enum.Enum / IntEnum types: msgspec puts them in $defs too
    for name, node in definitions.items():
        if isinstance(node, dict) and "enum" in node and node.get("type") != "object":
            enums[name] = _type(node, f"$defs/{name}")
    for name, node in definitions.items():
        if name in enums:
            continue
        if not _NAME.fullmatch(name) or not name[:1].isupper():
            raise CodegenError(
                f"$defs/{name}: a record name must be a capitalised identifier (two event "
                "types of one class name get module-qualified names: rename one)"
            )
        if name in RESERVED_TYPES:
            raise CodegenError(
                f"$defs/{name}: the generated clients use the name {name}: rename it"
            )
        model.records[name] = _record(name, node, enums)
    for record in model.records.values():
        for each in record.fields:
            _check_references(each.type, f"$defs/{record.name}/properties/{each.name}", model)
    for name, node in schema["streams"].items():
        model.streams.append(_stream(name, node, model))
    if not model.streams:
        raise CodegenError("the schema declares no stream")
    generated = {}
    for stream in model.streams:
        for suffix in ("Handlers", "Event"):
            made = pascal(stream.name) + suffix
            if made in model.records or made in generated:
                raise CodegenError(f"streams/{stream.name}: {made} is already a name")
            generated[made] = stream.name
        for event, _ in stream.events:
            if event in HANDLER_KEYS:
                raise CodegenError(
                    f"streams/{stream.name}: event {event!r} would be a handler's name"
                )
            if event in OBJECT_PROPERTIES:
                raise CodegenError(
                    f"streams/{stream.name}: event {event!r} would be a handler's name that "
                    "every JavaScript object has: rename the event type"
                )
            variant = pascal(stream.name) + event
            if variant in model.records:
                raise CodegenError(
                    f"streams/{stream.name}: the Elm variant {variant} is already a record's name"
                )
    return model


def _record(name: str, node: dict[str, Any], enums: dict[str, Type]) -> Record:
    where = f"$defs/{name}"
    if node.get("type") != "object" or not isinstance(node.get("properties"), dict):
        raise CodegenError(f"{where}: a record is an object with properties")
    fields = [
        Field(
            _text(key, f"{where}/properties/{key}"),
            _type(value, f"{where}/properties/{key}", enums),
        )
        for key, value in node["properties"].items()
    ]
    return Record(name, fields)


def _check_references(kind: Type, where: str, model: Model) -> None:
    """Every ``$ref`` in ``kind`` names a record of ``model`` (the name is pasted
    into the generated code as a type and a function's name)."""
    if kind.kind == "ref" and kind.ref not in model.records:
        raise CodegenError(f"{where}: {kind.ref!r} is no record in $defs")
    if kind.item is not None:
        _check_references(kind.item, where, model)


def _text(value: object, where: str) -> str:
    """``value`` if it is a str a UTF-8 file can hold (JSON can carry lone surrogates)."""
    if not isinstance(value, str):
        raise CodegenError(f"{where}: expected a string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CodegenError(f"{where}: {value!r} has a lone surrogate, which is no text") from None
    return value


def _type(node: Any, where: str, enums: dict[str, Type] | None = None) -> Type:
    enums = enums or {}
    if not isinstance(node, dict):
        raise CodegenError(f"{where}: a type is a JSON object")
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            raise CodegenError(f"{where}: only references into #/$defs/ are known, got {ref!r}")
        name = ref.removeprefix("#/$defs/")
        return enums.get(name) or Type("ref", ref=name)
    if "anyOf" in node:
        options = node["anyOf"]
        others = [o for o in options if o != {"type": "null"}]
        if len(options) == 2 and len(others) == 1:
            return Type("optional", item=_type(others[0], f"{where}/anyOf", enums))
        raise CodegenError(f"{where}: of the unions only `T | None` is generated")
    if "enum" in node or "const" in node:
        values = tuple(node["enum"]) if isinstance(node.get("enum"), list) else (node.get("const"),)
        if values and all(isinstance(v, str) for v in values):
            return Type("enum", values=tuple(_text(v, f"{where}/enum") for v in values))
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return Type("enum", values=values)
        raise CodegenError(f"{where}: enums of strings or of integers only (a list of them)")
    kind = node.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        if len(kind) == 2 and len(others) == 1:
            return Type("optional", item=_type({**node, "type": others[0]}, where))
        raise CodegenError(f"{where}: of the unions only `T | None` is generated")
    simple = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
    if kind in simple:
        return Type(simple[kind])
    if kind == "null":
        return Type("null")
    if kind == "array":
        if "prefixItems" in node or "items" not in node:
            raise CodegenError(f"{where}: tuples are not generated; use list[T]")
        return Type("list", item=_type(node["items"], f"{where}/items", enums))
    if kind == "object":
        if node.get("properties"):
            raise CodegenError(f"{where}: an object with properties must be a declared record")
        values = node.get("additionalProperties", {})
        return Type("dict", item=_type(values if isinstance(values, dict) else {}, where, enums))
    if kind is None and not (set(node) - {"title", "description", "default", "examples"}):
        return Type("any")
    raise CodegenError(f"{where}: type {kind!r} is not generated")


#: what a channel may be, for the error that refuses one
CHANNEL_RULE = (
    "a channel is topic characters (A-Z a-z 0-9 and "
    + "".join(c for c in TOPIC_CHARACTERS if not c.isalnum())
    + ") and {parameter} or {parameter:int}, maybe ending in /* (a pattern stream), as the "
    "server declares it"
)


def _stream(name: str, node: Any, model: Model) -> Stream:
    try:
        check_stream_name(name)
    except SchemaError as exc:
        raise CodegenError(f"streams: {exc}") from None
    where = f"streams/{name}"
    if not isinstance(node, dict):
        raise CodegenError(f"{where}: a stream is a JSON object")
    channel = node.get("channel")
    try:  # the server's own check: a channel it would refuse never reaches the output
        compile_channel(name, channel)
    except SchemaError as exc:
        raise CodegenError(
            f"{where}: the server refuses the channel {channel!r} ({exc}); {CHANNEL_RULE}"
        ) from None
    assert isinstance(channel, str)
    parts: list[str | Parameter] = []
    parameters: list[Parameter] = []
    at = 0
    for match in PARAMETER.finditer(channel):
        if match.start() > at:
            parts.append(channel[at : match.start()])
        parameter = Parameter(match.group(1), match.group(2) or "str")
        if camel(parameter.name) in RESERVED_PARAMETERS:
            raise CodegenError(
                f"{where}: parameter {parameter.name!r} would be {camel(parameter.name)!r}, a "
                "name the generated functions use: rename it"
            )
        for other in parameters:
            if camel(other.name) == camel(parameter.name):
                raise CodegenError(
                    f"{where}: parameters {other.name!r} and {parameter.name!r} would both be "
                    f"{camel(parameter.name)!r} in the generated functions: rename one"
                )
        parts.append(parameter)
        parameters.append(parameter)
        at = match.end()
    if at < len(channel):
        parts.append(channel[at:])
    events = []
    declared = node.get("events", {})
    if not isinstance(declared, dict):
        raise CodegenError(f"{where}/events: a JSON object of event names")
    for event, reference in declared.items():
        if not isinstance(reference, dict):
            raise CodegenError(f'{where}/events/{event}: a {{"$ref": ...}} object')
        record = str(reference.get("$ref", "")).removeprefix("#/$defs/")
        if record not in model.records:
            raise CodegenError(f"{where}/events/{event}: no record {record!r} in $defs")
        if not _NAME.fullmatch(event):
            raise CodegenError(f"{where}/events/{event}: an event name must be an identifier")
        events.append((event, record))
    if not events:
        raise CodegenError(f"{where}: no events")
    description = _text(node.get("description", ""), f"{where}/description")
    return Stream(name, channel, description, parameters, parts, events)


def pascal(name: str) -> str:
    """``user_profile`` -> ``UserProfile``; ``comments`` -> ``Comments``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def camel(name: str) -> str:
    """``item_id`` -> ``itemId``."""
    text = pascal(name)
    return text[:1].lower() + text[1:] if text else "_"
