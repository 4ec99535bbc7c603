"""Elm: type aliases, JSON decoders, and per stream a custom type of its events,
its topic function, its event decoder and a subscribe command through the
application's port.

The output is formatted as ``elm-format`` writes it (the tests run
``elm-format --validate`` on it). Elm reaches ``EventSource`` through ports,
which only an application may declare; so the generated
``subscribeToComments`` takes the application's outgoing port, and the
module's documentation carries the few lines of JavaScript that connect both
ports to ``EventSource`` (``JS_GLUE``).

What of the schema goes where (``_model.py`` checks names and channels): JSON
field names and enum values become Elm names only through ``_ascii`` (ASCII
letters, digits and ``_``, nothing else), and go into string literals through
``_string`` (escaped as elm-format writes them: nothing closes the literal or
ends the line); comments get descriptions of plain characters only, and
``_doc`` breaks any ``{-`` or ``-}`` (Elm's comments nest: either would let text
out of the comment).
"""

from __future__ import annotations

import re
import unicodedata

from ._model import CodegenError, Model, Parameter, Record, Stream, Type, camel, pascal

__all__ = [
    "JS_GLUE",
    "write",
]

_RESERVED = {
    "if",
    "then",
    "else",
    "case",
    "of",
    "let",
    "in",
    "type",
    "module",
    "where",
    "import",
    "exposing",
    "as",
    "port",
    "effect",
    "alias",
    "infix",
}

#: the JavaScript that connects the generated module's ports to ``EventSource`` (quoted in the
#: module's documentation)
JS_GLUE = """\
    const app = Elm.Main.init({ node: document.getElementById("app") });
    app.ports.sseSubscribe.subscribe(({ topic, events, lastEventId }) => {
      let url = "/events?topic=" + encodeURIComponent(topic);
      if (lastEventId) url += "&lastEventId=" + encodeURIComponent(lastEventId);
      const source = new EventSource(url);
      for (const event of events) {
        source.addEventListener(event, (e) =>
          app.ports.sseEvent.send({ topic, event, data: e.data, id: e.lastEventId })
        );
      }
    });"""


#: descriptions elm-format leaves as they are in a doc comment (others are left out)
_PLAIN = re.compile(r"[A-Za-z0-9 ,.;:()'-]*")
_MODULE = re.compile(r"[A-Z][A-Za-z0-9_]*(\.[A-Z][A-Za-z0-9_]*)*")


def _ascii(name: str) -> str:
    """``name`` with every character but ASCII letters, digits and _ as _."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)


def _field(name: str) -> str:
    """An Elm field or argument name for a JSON name (other characters become _)."""
    out = camel(_ascii(name))
    if not out[:1].isalpha():
        out = "f" + out
    return out + "_" if out in _RESERVED else out


def _lower(name: str) -> str:
    return name[:1].lower() + name[1:]


class _Writer:
    def __init__(self, model: Model) -> None:
        self.model = model
        #: string enums as custom types: name -> values
        self.enums: dict[str, tuple[str, ...]] = {}

    def type(self, kind: Type, context: str) -> str:
        simple = {"int": "Int", "float": "Float", "str": "String", "bool": "Bool", "null": "()"}
        if kind.kind in simple:
            return simple[kind.kind]
        if kind.kind == "any":
            return "Decode.Value"
        if kind.kind == "ref":
            return kind.ref
        if kind.kind == "enum":
            if isinstance(kind.values[0], int):
                return "Int"
            if self.enums.setdefault(context, tuple(kind.values)) != tuple(kind.values):
                raise CodegenError(f"two enums of different values would be the Elm type {context}")
            return context
        assert kind.item is not None
        inner = self.type(kind.item, context)
        inner = f"({inner})" if " " in inner else inner
        prefix = {"list": "List", "dict": "Dict String", "optional": "Maybe"}[kind.kind]
        return f"{prefix} {inner}"

    def decoder(self, kind: Type, context: str) -> str:
        simple = {
            "int": "Decode.int",
            "float": "Decode.float",
            "str": "Decode.string",
            "bool": "Decode.bool",
            "null": "(Decode.null ())",
            "any": "Decode.value",
        }
        if kind.kind in simple:
            return simple[kind.kind]
        if kind.kind == "ref":
            return _lower(kind.ref) + "Decoder"
        if kind.kind == "enum":
            if isinstance(kind.values[0], int):
                values = ", ".join(str(v) for v in kind.values)
                return f"(oneOfInts [ {values} ])"
            return _lower(context) + "Decoder"
        assert kind.item is not None
        inner = self.decoder(kind.item, context)
        helper = {"list": "Decode.list", "dict": "Decode.dict", "optional": "Decode.nullable"}
        return f"({helper[kind.kind]} {inner})"

    def record(self, record: Record) -> list[str]:
        names = [_field(f.name) for f in record.fields]
        if len(set(names)) != len(names):
            raise CodegenError(f"$defs/{record.name}: two fields have one Elm name ({names})")
        lines = [f"type alias {record.name} ="]
        if not record.fields:
            lines.append("    {}")
        for index, (f, name) in enumerate(zip(record.fields, names, strict=True)):
            lead = "    { " if index == 0 else "    , "
            lines.append(f"{lead}{name} : {self.type(f.type, _enum_name(record, f.name))}")
        if record.fields:
            lines.append("    }")
        decoder = _lower(record.name) + "Decoder"
        lines += ["", "", f"{decoder} : Decoder {record.name}", f"{decoder} =", ""]
        lines[-1:] = [f"    Decode.succeed {record.name}"]
        for f in record.fields:
            field_decoder = self.decoder(f.type, _enum_name(record, f.name))
            lines.append(f"        |> andMap (Decode.field {_string(f.name)} {field_decoder})")
        return lines

    def enum(self, name: str, values: tuple[str, ...]) -> list[str]:
        variants = [name + pascal(_variant(v)) for v in values]
        if len(set(variants)) != len(variants):
            raise CodegenError(f"{name}: two enum values have one Elm name ({values})")
        lines = [f"type {name}"]
        lines += [("    = " if i == 0 else "    | ") + v for i, v in enumerate(variants)]
        decoder = _lower(name) + "Decoder"
        not_one_of = _string(f"not one of {name}'s values: ")
        lines += [
            "",
            "",
            f"{decoder} : Decoder {name}",
            f"{decoder} =",
            "    Decode.string",
            "        |> Decode.andThen",
            "            (\\value ->",
            "                case value of",
        ]
        for value, variant in zip(values, variants, strict=True):
            lines += [
                f"                    {_string(value)} ->",
                f"                        Decode.succeed {variant}",
                "",
            ]
        lines += [
            "                    _ ->",
            f"                        Decode.fail ({not_one_of} ++ value)",
            "            )",
        ]
        return lines

    def stream(self, stream: Stream) -> list[str]:
        name = pascal(stream.name)
        lower = _lower(name)
        event_type = f"{name}Event"
        description = stream.description if _PLAIN.fullmatch(stream.description) else ""
        lines = [
            "{-| "
            + _doc(
                f"Events of stream `{stream.name}` (channel `{stream.channel}`)"
                + (f": {description}" if description else ".")
            ),
            "-}",
            f"type {event_type}",
        ]
        lines += [
            ("    = " if i == 0 else "    | ") + f"{name}{event} {record}"
            for i, (event, record) in enumerate(stream.events)
        ]
        arguments = [
            ("Int" if p.kind == "int" else "String", _field(p.name)) for p in stream.parameters
        ]
        pieces = []
        for part in stream.parts:
            if isinstance(part, Parameter):
                value = _field(part.name)
                pieces.append(f"String.fromInt {value}" if part.kind == "int" else value)
            else:
                pieces.append(_string(part))
        signature = " -> ".join([*(kind for kind, _ in arguments), "String"])
        lines += [
            "",
            "",
            "{-| " + _doc(f"The {stream.what} of stream `{stream.name}` (`{stream.channel}`)."),
            "-}",
            f"{lower}Topic : {signature}",
            " ".join([f"{lower}Topic", *(n for _, n in arguments)]) + " =",
            "    " + " ++ ".join(pieces),
            "",
            "",
            "{-| " + _doc(f"An event of stream `{stream.name}`, from its SSE event name and data."),
            "-}",
            f"{lower}Event : String -> String -> Result String {event_type}",
            f"{lower}Event event data =",
            "    case event of",
        ]
        for event, record in stream.events:
            lines += [
                f"        {_string(event)} ->",
                f"            decodeWith (Decode.map {name}{event} {_lower(record)}Decoder) data",
                "",
            ]
        lines += [
            "        _ ->",
            f"            Err ({_string(f'stream {stream.name} has no event ')} ++ event)",
            "",
            "",
            "{-| "
            + _doc(f"Subscribe to stream `{stream.name}` through the application's port (see the"),
            "module's documentation).",
            "-}",
            f"subscribeTo{name} : (SubscribeRequest -> Cmd msg) -> "
            + " -> ".join([*(kind for kind, _ in arguments), "Maybe String -> Cmd msg"]),
            " ".join([f"subscribeTo{name} send", *(n for _, n in arguments), "lastEventId"]) + " =",
            "    send",
            f"        {{ topic = {lower}Topic{''.join(' ' + n for _, n in arguments)}",
            "        , events = [ "
            + ", ".join(_string(event) for event, _ in stream.events)
            + " ]",
            "        , lastEventId = lastEventId",
            "        }",
        ]
        return lines


def _check_names(model: Model, enums: dict[str, tuple[str, ...]]) -> None:
    """CodegenError when two things the module declares would have one name (a record
    and an enum of another record's field, two variants, ...)."""
    types = ["SubscribeRequest", *model.records, *enums]
    constructors = ["SubscribeRequest", *model.records]  # a record alias is a constructor too
    for name, values in enums.items():
        constructors += [name + pascal(_variant(v)) for v in values]
    for stream in model.streams:
        types.append(pascal(stream.name) + "Event")
        constructors += [pascal(stream.name) + event for event, _ in stream.events]
    for kind, names in (("type", types), ("constructor", constructors)):
        seen = set()
        for name in names:
            if name in seen:
                raise CodegenError(f"the Elm module would declare two {kind}s {name}: rename one")
            seen.add(name)


def _enum_name(record: Record, field: str) -> str:
    """The Elm type of the string enum of ``record``'s field ``field`` (a JSON name)."""
    return record.name + pascal(_ascii(field))


def _variant(value: str) -> str:
    cleaned = _ascii(value)
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "V" + cleaned
    return cleaned


#: the helpers every generated module has (after the streams' own declarations)
_PRELUDE_BLOCKS: list[list[str]] = [
    [
        "{-| What a subscribe command sends through the application's port.",
        "-}",
        "type alias SubscribeRequest =",
        "    { topic : String",
        "    , events : List String",
        "    , lastEventId : Maybe String",
        "    }",
    ],
    [
        "decodeWith : Decoder a -> String -> Result String a",
        "decodeWith decoder data =",
        "    Decode.decodeString decoder data",
        "        |> Result.mapError Decode.errorToString",
    ],
    [
        "andMap : Decoder a -> Decoder (a -> b) -> Decoder b",
        "andMap =",
        "    Decode.map2 (|>)",
    ],
    [
        "oneOfInts : List Int -> Decoder Int",
        "oneOfInts values =",
        "    Decode.int",
        "        |> Decode.andThen",
        "            (\\value ->",
        "                if List.member value values then",
        "                    Decode.succeed value",
        "",
        "                else",
        "                    Decode.fail "
        '("not one of the allowed values: " ++ String.fromInt value)',
        "            )",
    ],
]


def _header(module: str) -> list[str]:
    """The module line, its documentation (the ports and the JavaScript glue), imports."""
    return [
        f"module {module} exposing (..)",
        "",
        "{-| Generated by `sse-fast codegen --lang elm` from the edge's /schema. Do not edit:",
        "generate it again when the declarations change.",
        "",
        "Declare two ports in your application and connect them to EventSource:",
        "",
        "    port sseSubscribe : SubscribeRequest -> Cmd msg",
        "",
        "    port sseEvent : ({ topic : String, event : String, data : String, id : String }"
        " -> msg) -> Sub msg",
        "",
        *JS_GLUE.splitlines(),
        "",
        "Then `subscribeToComments sseSubscribe itemId Nothing` subscribes, and",
        "`commentsEvent raw.event raw.data` decodes what `sseEvent` brings.",
        "",
        "-}",
        "",
        "import Dict exposing (Dict)",
        "import Json.Decode as Decode exposing (Decoder)",
    ]


def write(model: Model, module: str = "Events") -> str:
    """The Elm module ``module`` for ``model``, as elm-format writes it; ``CodegenError`` for a
    module name that is not capitalised names joined by dots, or names that clash."""
    if not _MODULE.fullmatch(module):
        raise CodegenError(f"Elm module name {module!r}: capitalised names joined by dots")
    writer = _Writer(model)
    blocks: list[list[str]] = []
    for record in model.records.values():
        blocks.append(writer.record(record))
    for stream in model.streams:
        blocks.append(writer.stream(stream))
    for name, values in writer.enums.items():  # found while writing the records
        blocks.append(writer.enum(name, values))
    _check_names(model, writer.enums)
    blocks += _PRELUDE_BLOCKS
    out = _header(module)
    for block in blocks:
        out += ["", "", *block]
    return "\n".join(out) + "\n"


#: characters elm-format writes as \\u{XXXX} in a string: what Haskell's isPrint refuses
#: (controls, format characters, surrogates, private use, unassigned, U+2028 and U+2029)
_UNPRINTABLE = frozenset(["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"])


def _string(text: str) -> str:
    """``text`` as an Elm string literal, escaped as elm-format writes it: \\n, \\t,
    \\\\ and \\", and \\u{XXXX} for what is no printable character and for spaces
    other than " " (so no character of ``text`` ends the literal or the line)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}
    out = []
    for c in text:
        if c in escapes:
            out.append(escapes[c])
        elif c != " " and (unicodedata.category(c) in _UNPRINTABLE or c.isspace()):
            out.append(f"\\u{{{ord(c):04X}}}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _doc(text: str) -> str:
    """``text`` to go inside ``{-| ... -}``: no ``{-`` or ``-}`` (Elm's comments nest)."""
    return text.replace("{-", "{ -").replace("-}", "- }")
