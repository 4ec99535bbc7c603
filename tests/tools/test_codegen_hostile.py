"""``sse-fast codegen`` fed a hostile ``/schema`` (issue 25): a spoofed edge or a
tampered file must not write code into the clients users ship.

* a channel the server would refuse is refused, with a sentence naming it (the
  server's own check, ``sse_fast._channel_patterns.compile_channel``), and so are the other
  strings a client cannot carry (a ``$ref`` to no record, an event named like
  what every JavaScript object has, a lone surrogate, ...);
* what the server does accept, and what JSON can say anyway (field names and
  enum values with quotes, backticks, ``*/``, ``-}``, newlines, U+2028,
  ``</script>``, ``__proto__``, reserved words), gives a TypeScript client that
  compiles under ``tsc --strict`` and, run in node, decodes all of it back as
  data: nothing of it executes, no global appears, it exports and declares what
  the same schema with plain names does, and a field or map key ``__proto__`` is
  an own property; and an Elm module that elm-format accepts, whose top-level
  declarations are those of the plain schema, and whose string literals read
  back as the names in the schema.

Real processes: the codegen command, tsc, node and elm-format, given what a hostile
schema holds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sse_fast.codegen import CodegenError, generate
from sse_fast.schemas import SchemaError, Stream

from ..support import node_tools

#: what a code generator that pastes text would turn into code: each sets
#: globalThis.INJECTED, declares a port, or closes a literal or a comment
PAYLOADS = [
    '*/ globalThis.INJECTED = "ts-comment"; /*',
    '" + (globalThis.INJECTED = "ts-string") + "',
    "' + (globalThis.INJECTED = 'ts-single') + '",
    '`${(globalThis.INJECTED = "template")}`',
    '\\"; globalThis.INJECTED = "backslash"; //',
    "-}\nport evil : String -> Cmd msg\n{-",
    "{- port evil : String -> Cmd msg",
    '"\nport evil : String -> Cmd msg\n"',
    '</script><script>globalThis.INJECTED = "html"</script>',
    "line\u2028separator\u2029paragraph",
    "nul\x00bell\x07rubout\x7fescape\x1b[31m",
    "carriage\r\nreturn\ttab",
    "no\u00a0break\u200bzero\u202eoverride\ufeffmark",
    "caf\u00e9 \U0001f600 \u2200x",
    "-- line comment",
    '// line comment\nglobalThis.INJECTED = "line"',
    "\\u0022 not a quote",
    "",
    "__proto__",
    "constructor",
    "toString",
    "hasOwnProperty",
    "delete",
    "class",
    "port",
    "module",
    "type",
    "import",
]
#: a channel of every character a topic may have, and both kinds of parameter
CHANNEL = "hostile._~:/@!$&'()+,;=%-{item_id}/{n:int}"
#: event names JavaScript or Elm reserve (a schema file may say them; msgspec cannot)
WORDS = ["delete", "class", "in", "port", "type"]


def schema_of(strings: list[str], description: str) -> dict[str, Any]:
    """A /schema document whose field names, enum values and description are
    ``strings``: record ``Hostile{i}`` has a string field named ``strings[i]``, an
    enum field named ``strings[i] + " kind"`` and an enum field ``value`` of
    ``[strings[i], "plain"]``; record ``Maps`` has ``__proto__`` (a map of
    anything), ``counts`` (a map of integers), ``constructor`` (anything) and
    ``toString``."""
    definitions: dict[str, Any] = {}
    for index, text in enumerate(strings):
        definitions[f"Hostile{index}"] = {
            "type": "object",
            "properties": {
                text: {"type": "string"},
                text + " kind": {"enum": ["plain", "other"]},
                "value": {"enum": [text, "plain"]},
            },
        }
    definitions["Maps"] = {
        "type": "object",
        "properties": {
            "__proto__": {"type": "object", "additionalProperties": {}},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "constructor": {},
            "toString": {"type": "string"},
        },
    }
    events = {name: {"$ref": f"#/$defs/{name}"} for name in definitions}
    return {
        "streams": {
            "hostile": {"channel": CHANNEL, "description": description, "events": events},
            "words": {
                "channel": "words",
                "description": description,
                "events": {word: {"$ref": f"#/$defs/Hostile{n}"} for n, word in enumerate(WORDS)},
            },
        },
        "$defs": definitions,
    }


HOSTILE = schema_of(PAYLOADS, " ".join(PAYLOADS))
#: the same schema with plain names: what the hostile one must declare, no more
PLAIN = schema_of([f"plain{n}" for n in range(len(PAYLOADS))], "")


# -- refused ---------------------------------------------------------------------------------


def with_channel(channel: Any) -> dict[str, Any]:
    return {
        "streams": {"s": {"channel": channel, "events": {"E": {"$ref": "#/$defs/E"}}}},
        "$defs": {"E": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    }


@pytest.mark.parametrize(
    "channel",
    [
        "item:{item_id}*/ console.log('INJECTED'); /*",  # the issue's: closes a TS comment
        "item:{item_id} -}\nport evil : String -> Cmd msg\n{-",  # closes an Elm comment
        'item:"quoted"',
        "item:'single'quote\"",
        "item:`backtick`",
        "item:*/",
        "item:-}",
        "item:{-",
        "item:{item_id}-}",
        "item:\nline",
        "item:\rreturn",
        "item:\x00nul",
        "item:</script>",
        "item:\u2028separator",
        "item:\u00e9",
        "item with space",
        "item:{a}{b}",
        "item:{a:float}",
        "item:{a}:{a}",
        "",
        None,
    ],
)
def test_a_channel_the_server_refuses_is_refused(channel: Any) -> None:
    kind = msgspec.defstruct("E", [("a", int)])
    with pytest.raises(SchemaError):  # the server's own rule
        Stream("s", channel, [kind])
    for lang in ("typescript", "elm"):
        with pytest.raises(CodegenError) as info:
            generate(with_channel(channel), lang)
        message = str(info.value)
        assert message.startswith(f"streams/s: the server refuses the channel {channel!r} ("), (
            message
        )
        assert "a channel is topic characters (A-Z a-z 0-9 and ._~:/@!$&'()+,;=%-) and " in message
        assert "\n" not in message and "\u2028" not in message  # said, not pasted


@pytest.mark.processes("hostile schemas through the CLI, tsc, node and elm-format")
def test_codegen_from_a_tampered_file_writes_nothing(tmp_path: Path) -> None:
    """The documented workflow (``--schema-file``, ``--schema-url``) says why and exits 2."""
    channel = "item:{item_id}*/ console.log('INJECTED'); /*"
    (tmp_path / "schema.json").write_text(json.dumps(with_channel(channel)))
    out = tmp_path / "events.ts"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sse_fast", "codegen", "--lang", "typescript"),
            *("--schema-file", str(tmp_path / "schema.json"), "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"streams/s: the server refuses the channel {channel!r}" in done.stderr
    assert not out.exists()


def changed(change: str) -> dict[str, Any]:
    """A small valid schema with one hostile change."""
    schema = json.loads(json.dumps(with_channel("item:{item_id}")))
    stream, record = schema["streams"]["s"], schema["$defs"]["E"]
    if change == "stream name":
        schema["streams"] = {"_s": stream}
    elif change == "stream name with a comment":
        schema["streams"] = {"s*/x": stream}
    elif change == "event __proto__":
        stream["events"] = {"__proto__": {"$ref": "#/$defs/E"}}
    elif change == "event constructor":
        stream["events"] = {"constructor": {"$ref": "#/$defs/E"}}
    elif change == "ref to no record":
        record["properties"]["b"] = {"$ref": "#/$defs/Missing"}
    elif change == "ref that is code":
        ref = '#/$defs/E; globalThis.INJECTED = "ref"; //'
        record["properties"]["b"] = {"type": "array", "items": {"$ref": ref}}
    elif change == "empty enum":
        record["properties"]["b"] = {"enum": []}
    elif change == "lone surrogate field":
        record["properties"]["\ud800"] = {"type": "string"}
    elif change == "lone surrogate value":
        record["properties"]["b"] = {"enum": ["\udfff"]}
    elif change == "lone surrogate description":
        stream["description"] = "\ud800"
    elif change == "two parameters of one name":
        stream["channel"] = "item:{item_id}:{itemId}"
    elif change == "record named as the prelude's class":
        schema["$defs"] = {"RangeError": record}
        stream["events"] = {"E": {"$ref": "#/$defs/RangeError"}}
    return schema


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("stream name", r"streams: stream name '_s': a letter, then letters, digits or _"),
        ("stream name with a comment", r"streams: stream name 's\*/x'"),
        ("event __proto__", "event '__proto__' would be a handler's name that every JavaScript"),
        ("event constructor", "event 'constructor' would be a handler's name that every"),
        ("ref to no record", r"\$defs/E/properties/b: 'Missing' is no record in \$defs"),
        (
            "ref that is code",
            r"\$defs/E/properties/b: 'E; globalThis.INJECTED = \"ref\"; //' is no",
        ),
        ("empty enum", "enums of strings or of integers only"),
        ("lone surrogate field", "lone surrogate"),
        ("lone surrogate value", "lone surrogate"),
        ("lone surrogate description", "lone surrogate"),
        ("two parameters of one name", "parameters 'item_id' and 'itemId' would both be 'itemId'"),
        ("record named as the prelude's class", "the generated clients use the name RangeError"),
    ],
)
def test_other_strings_a_client_cannot_carry_are_refused(change: str, message: str) -> None:
    for lang in ("typescript", "elm"):
        with pytest.raises(CodegenError, match=message):
            generate(changed(change), lang)


def test_elm_names_that_would_clash_are_refused() -> None:
    """A field's enum is named after its record and field, ASCII only: a schema that
    makes two declarations of one name is refused (the old writer shared the type)."""

    def schema(definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        records = {
            name: {"type": "object", "properties": properties}
            for name, properties in definitions.items()
        }
        events = {name: {"$ref": f"#/$defs/{name}"} for name in records}
        return {"streams": {"s": {"channel": "s", "events": events}}, "$defs": records}

    enum = {"enum": ["x", "y"]}
    clash = schema({"A": {"b": enum}, "AB": {"c": {"type": "string"}}})
    with pytest.raises(CodegenError, match="the Elm module would declare two types AB"):
        generate(clash, "elm")
    shared = schema({"A": {"b*/c": enum}, "AB": {"c": {"enum": ["z"]}}})
    with pytest.raises(
        CodegenError, match="two enums of different values would be the Elm type ABC"
    ):
        generate(shared, "elm")
    for both in (clash, shared):  # TypeScript names no enum
        assert "export interface AB {" in generate(both, "typescript")


def test_an_elm_module_name_is_ascii() -> None:
    schema = with_channel("item:{item_id}")
    assert generate(schema, "elm", module="App.Events").startswith("module App.Events exposing")
    for module in ("\u00c9vents", "Events exposing (..)\nport", "Events.", "events"):
        with pytest.raises(CodegenError, match="Elm module name"):
            generate(schema, "elm", module=module)


# -- TypeScript: compiled, run, and nothing of the input executes -----------------------------

RUN = """import { readFileSync, writeFileSync } from "node:fs";
const before = new Set(Object.getOwnPropertyNames(globalThis));
class FakeEventSource {
  static made = [];
  constructor(url) {
    this.url = url;
    this.listeners = {};
    FakeEventSource.made.push(this);
  }
  addEventListener(name, listener) {
    (this.listeners[name] ??= []).push(listener);
  }
  close() {}
  emit(name, data, id) {
    for (const listener of this.listeners[name] ?? []) listener({ data, lastEventId: id });
  }
}
globalThis.EventSource = FakeEventSource;
const events = await import("./out/events.js");  // after the globals are counted
const cases = JSON.parse(readFileSync("cases.json", "utf8"));
const out = {};
out.exports = Object.keys(events).sort();
out.decoded = cases.decode.map(([decoder, value]) => events[decoder](value));
out.ownKeys = out.decoded.map((value) => Object.getOwnPropertyNames(value));
const maps = events.decodeMaps(cases.maps);
out.maps = {
  prototypeKept: Object.getPrototypeOf(maps) === Object.prototype,
  ownProto: Object.prototype.hasOwnProperty.call(maps, "__proto__") ? maps["__proto__"] : "absent",
  polluted: maps.polluted ?? null,
  countsPrototypeKept: Object.getPrototypeOf(maps.counts) === Object.prototype,
  countsOwnProto: Object.prototype.hasOwnProperty.call(maps.counts, "__proto__")
    ? maps.counts["__proto__"]
    : "absent",
  countsPolluted: maps.counts.polluted ?? null,
  constructorType: typeof maps.constructor,
  toString: maps.toString,
};
out.topic = events.hostileTopic("a", 1);
const got = [];
const handlers = {
  Hostile0: (event, id) => got.push(["Hostile0", event, id]),
  delete: (event, id) => got.push(["delete", event, id]),
  onError: (error) => got.push(["error", String(error)]),
};
events.subscribeToHostile("a", 1, handlers);
events.subscribeToWords(handlers);
const [hostile, words] = FakeEventSource.made;
hostile.emit("Hostile0", JSON.stringify(cases.decode[0][1]), "1");
words.emit("delete", JSON.stringify(cases.decode[0][1]), "2");
words.emit("class", JSON.stringify({}), "3");  // does not decode: onError, no handler
out.got = got;
out.urls = FakeEventSource.made.map((source) => source.url);
out.listened = FakeEventSource.made.map((source) => Object.keys(source.listeners).sort());
out.injected = globalThis.INJECTED ?? null;
out.globals = Object.getOwnPropertyNames(globalThis).filter((name) => !before.has(name));
writeFileSync("out.json", JSON.stringify(out));
"""


def declarations(d_ts: str) -> list[str]:
    """The top-level declarations of a ``.d.ts`` file: its lines not indented, but for
    the documentation comments (one line each)."""
    return [
        line
        for line in d_ts.splitlines()
        if line
        and not line[0].isspace()
        and not (line.startswith("/**") and line.endswith("*/") and line.count("*/") == 1)
    ]


@pytest.mark.mode_independent  # generated and compiled: no server, no core
@pytest.mark.processes("hostile schemas through the CLI, tsc, node and elm-format")
def test_hostile_strings_give_a_typescript_client_that_runs_them_as_data(tmp_path: Path) -> None:
    (tmp_path / "events.ts").write_text(generate(HOSTILE, "typescript"))
    (tmp_path / "plain.ts").write_text(generate(PLAIN, "typescript"))
    options = ["--strict", "--target", "es2020", "--lib", "es2020,dom", "--module", "es2020"]
    done = subprocess.run(  # one tsc run: both clients, and their declarations
        [*node_tools.tsc(), *options, "--declaration", "--outDir", "out", "events.ts", "plain.ts"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    decode = [
        [f"decodeHostile{n}", {text: text, text + " kind": "plain", "value": text}]
        for n, text in enumerate(PAYLOADS)
    ]
    maps = {"__proto__": {"polluted": "yes"}, "counts": {"__proto__": 1, "a": 2}, "toString": "s"}
    (tmp_path / "cases.json").write_text(json.dumps({"decode": decode, "maps": maps}))
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "run.mjs").write_text(RUN)
    done = subprocess.run(
        ["node", "run.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # nothing printed by anything injected
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["injected"] is None
    assert out["globals"] == ["EventSource"]  # ours, the fake; none from the module
    assert out["exports"] == sorted(
        [
            "DecodeError",
            "decodeMaps",
            *(f"decodeHostile{n}" for n in range(len(PAYLOADS))),
            "hostileTopic",
            "subscribeToHostile",
            "wordsTopic",
            "subscribeToWords",
        ]
    )
    # every hostile name and value came back as data, each field an own property
    assert out["decoded"] == [value for _, value in decode]
    assert out["ownKeys"] == [list(value) for _, value in decode]
    assert out["maps"] == {
        "prototypeKept": True,
        "ownProto": {"polluted": "yes"},
        "polluted": None,
        "countsPrototypeKept": True,
        "countsOwnProto": 1,
        "countsPolluted": None,
        "constructorType": "undefined",  # not Object, which every object inherits
        "toString": "s",
    }
    topic = "hostile._~:/@!$&'()+,;=%-a/1"
    assert out["topic"] == topic
    assert out["urls"] == [
        "/events?topic=" + urllib.parse.quote(topic, safe="-_.!~*'()"),
        "/events?topic=words",
    ]
    assert out["listened"] == [
        sorted(["sse-fast-disconnect", "sse-fast-missed", *HOSTILE["$defs"]]),
        sorted(["sse-fast-disconnect", "sse-fast-missed", *WORDS]),
    ]
    assert out["got"] == [
        ["Hostile0", decode[0][1], "1"],
        ["delete", decode[0][1], "2"],
        ["error", f"DecodeError: $.{PAYLOADS[1]}: expected a string"],  # class: Hostile1
    ]
    # and it declares what the plain schema's client declares, no more
    hostile_d_ts = (tmp_path / "out/events.d.ts").read_text()
    assert declarations(hostile_d_ts) == declarations((tmp_path / "out/plain.d.ts").read_text())


# -- Elm: as elm-format writes it, declaring what the plain schema declares --------------------


def elm_code(source: str) -> str:
    """``source`` with comments and string and character literals blanked out (line
    breaks kept): what is left is what Elm reads as code."""
    out, at, depth = [], 0, 0
    while at < len(source):
        two = source[at : at + 2]
        if depth:
            depth += 1 if two == "{-" else -1 if two == "-}" else 0
            step = 2 if two in ("{-", "-}") else 1
        elif two == "{-":
            depth, step = 1, 2
        elif two == "--":
            step = source.find("\n", at) - at if "\n" in source[at:] else len(source) - at
        elif source[at] in "\"'":
            quote = '"""' if source.startswith('"""', at) else source[at]
            end = at + len(quote)
            while end < len(source) and not source.startswith(quote, end):
                end += 2 if source[end] == "\\" else 1
            step = end + len(quote) - at
        else:
            out.append(source[at])
            at += 1
            continue
        out.append("".join(c if c == "\n" else " " for c in source[at : at + step]))
        at += step
    return "".join(out)


def elm_top_level(source: str) -> list[str]:
    """What each top-level line of an Elm module declares: ``module``, ``import``,
    ``port``, ``type``, ``type alias``, an annotation or a definition."""
    kinds = []
    for line in elm_code(source).splitlines():
        if not line or line[0].isspace():
            continue
        words = line.split()
        if words[:2] == ["type", "alias"]:
            kinds.append("type alias")
        elif words[0] in ("module", "import", "port", "type", "effect", "infix"):
            kinds.append(words[0])
        elif re.fullmatch(r"[a-z]\w* :.*", line):
            kinds.append("annotation")
        elif re.fullmatch(r"[a-z]\w*( \w+)* =", line):
            kinds.append("definition")
        else:
            kinds.append(f"other: {line}")
    return kinds


def elm_strings(source: str, before: str) -> list[str]:
    """The string literals after ``before`` in ``source``, read as Elm reads them."""
    found = re.findall(re.escape(before) + r'"((?:[^"\\]|\\.)*)"', source)
    escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\"}

    def unescape(match: re.Match[str]) -> str:
        text = match.group(1)
        return chr(int(text[2:-1], 16)) if text.startswith("u{") else escapes[text]

    return [re.sub(r"\\(u\{[0-9A-F]+\}|.)", unescape, text) for text in found]


@pytest.mark.processes("hostile schemas through the CLI, tsc, node and elm-format")
def test_hostile_strings_give_an_elm_module_that_declares_nothing_of_them(tmp_path: Path) -> None:
    hostile, plain = generate(HOSTILE, "elm"), generate(PLAIN, "elm")
    kinds = elm_top_level(hostile)
    assert kinds.count("port") == 0 and kinds.count("module") == 1 and kinds.count("import") == 2
    assert not [kind for kind in kinds if kind.startswith("other")]
    assert kinds == elm_top_level(plain)
    (tmp_path / "Events.elm").write_text(hostile)
    (tmp_path / "Plain.elm").write_text(plain)
    done = subprocess.run(
        [str(node_tools.elm_format()), "--validate", "Events.elm", "Plain.elm"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
    # the names and values are in the module as data, and read back as they are in the schema
    fields = [name for record in HOSTILE["$defs"].values() for name in record["properties"]]
    assert elm_strings(hostile, "(Decode.field ") == fields
    cases = [value for text in PAYLOADS for value in ("plain", "other", text, "plain")]
    assert elm_strings(hostile, "\n                    ") == cases  # the enums' decoders
    assert elm_strings(hostile, "\n        ") == [*HOSTILE["$defs"], *WORDS]  # events
    assert elm_strings(hostile, "hostileTopic itemId n =\n    ") == ["hostile._~:/@!$&'()+,;=%-"]
