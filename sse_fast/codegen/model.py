"""The ``GET /schema`` document read into what the generators write: streams
(channel pattern, parameters, events) and records (fields and their types).

Types the generators know: integer, number, string, boolean, null, arrays,
string-keyed maps (``dict[str, T]``), records (``$ref``), ``T | None``, enums
and constants of strings or integers, and anything (``Any``). Others (tuples,
unions of several types) are refused with the path to them: a generated
client would have to guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..schemas import PARAMETER

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CodegenError(ValueError):
    """A schema a client cannot be generated from (what, and where)."""


@dataclass(frozen=True)
class Type:
    kind: str  # int float str bool null any list dict optional ref enum
    item: Type | None = None  # list, dict, optional
    ref: str = ""  # ref: the record's name
    values: tuple[Any, ...] = ()  # enum


@dataclass
class Field:
    name: str  # as on the wire (JSON)
    type: Type


@dataclass
class Record:
    name: str
    fields: list[Field]


@dataclass
class Parameter:
    name: str
    kind: str  # "str" or "int"


@dataclass
class Stream:
    name: str
    channel: str
    description: str
    parameters: list[Parameter]
    #: the channel as literal text and parameters, in order
    parts: list[str | Parameter]
    events: list[tuple[str, str]]  # (event name, record name)


@dataclass
class Model:
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
        Field(key, _type(value, f"{where}/properties/{key}", enums))
        for key, value in node["properties"].items()
    ]
    return Record(name, fields)


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
        values = tuple(node["enum"]) if "enum" in node else (node["const"],)
        if all(isinstance(v, str) for v in values) or all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            return Type("enum", values=values)
        raise CodegenError(f"{where}: enums of strings or of integers only")
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


def _stream(name: str, node: dict[str, Any], model: Model) -> Stream:
    where = f"streams/{name}"
    if not _NAME.fullmatch(name):
        raise CodegenError(f"{where}: a stream name must be an identifier")
    channel = node.get("channel")
    if not isinstance(channel, str) or not channel:
        raise CodegenError(f"{where}: no channel")
    parts: list[str | Parameter] = []
    parameters = []
    at = 0
    for match in PARAMETER.finditer(channel):
        if match.start() > at:
            parts.append(channel[at : match.start()])
        parameter = Parameter(match.group(1), match.group(2) or "str")
        if parameter.kind not in ("str", "int"):
            raise CodegenError(f"{where}: parameter kind {parameter.kind!r} is not known")
        if camel(parameter.name) in RESERVED_PARAMETERS:
            raise CodegenError(
                f"{where}: parameter {parameter.name!r} would be {camel(parameter.name)!r}, a "
                "name the generated functions use: rename it"
            )
        parts.append(parameter)
        parameters.append(parameter)
        at = match.end()
    if at < len(channel):
        parts.append(channel[at:])
    events = []
    for event, reference in node.get("events", {}).items():
        record = str(reference.get("$ref", "")).removeprefix("#/$defs/")
        if record not in model.records:
            raise CodegenError(f"{where}/events/{event}: no record {record!r} in $defs")
        if not _NAME.fullmatch(event):
            raise CodegenError(f"{where}/events/{event}: an event name must be an identifier")
        events.append((event, record))
    if not events:
        raise CodegenError(f"{where}: no events")
    return Stream(name, channel, str(node.get("description", "")), parameters, parts, events)


def pascal(name: str) -> str:
    """``user_profile`` -> ``UserProfile``; ``comments`` -> ``Comments``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def camel(name: str) -> str:
    """``item_id`` -> ``itemId``."""
    text = pascal(name)
    return text[:1].lower() + text[1:] if text else "_"
