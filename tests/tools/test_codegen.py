"""``sse-fast codegen``: the TypeScript client type-checks with ``tsc --strict`` (and a
client that uses a field wrongly does not), its decoders refuse what does not
fit (run in node), and it receives typed events from a running edge in
Chromium; the Elm module passes ``elm-format --validate`` and its decoders
read the fields and types the schema has (``elm make`` cannot run here: it
fetches elm/core from Elm's own package server). Real processes: tsc, node, elm-format
and Chromium given the generated clients, and the command against a running edge."""

from __future__ import annotations

import enum
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sse_fast.codegen import CodegenError, generate
from sse_fast.schemas import Schemas, Stream
from sse_fast.testing import ServerProcess

from ..support import node_tools
from ..support import typed_streams as typed
from ..support.browser import chromium

SCHEMA = Schemas(typed.with_pattern).json_schema()
GOOD = {"comment_id": 1, "text": "hi", "author": {"id": 3, "name": "Ada"}}


class Colour(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark-blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Painted(msgspec.Struct, rename={"user_name": "user-name"}):
    colour: Colour
    level: Level
    type: str
    user_name: str
    note: list[str | None] = []


def compile_ts(
    directory: Path, *files: str, emit: bool = False
) -> subprocess.CompletedProcess[str]:
    options = ["--strict", "--target", "es2020", "--lib", "es2020,dom", "--module", "es2020"]
    return subprocess.run(
        [*node_tools.tsc(), *options, *([] if emit else ["--noEmit"]), *files],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def typescript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ts")
    (directory / "events.ts").write_text(generate(SCHEMA, "typescript"))
    return directory


@pytest.mark.mode_independent  # generated and compiled: no server, no core
@pytest.mark.processes("the generated clients run by tsc, node, elm-format and Chromium; the CLI")
def test_the_typescript_client_type_checks_strictly(typescript: Path) -> None:
    done = compile_ts(typescript, "events.ts")
    assert done.returncode == 0, done.stdout + done.stderr


USE = """import { subscribeToComments, subscribeToNotifications, alertsTopic } from "./events";
subscribeToComments("42", {
  CommentAdded(event, id) {
    const n: number = event.comment_id;
    const who: string = event.author.name;
    const tags: string[] = event.tags;
    console.log(n, who, tags, event.edited, id);
  },
});
subscribeToNotifications(7, { TaskComplete: (event) => console.log(event.seconds ?? 0) });
console.log(alertsTopic());
"""


@pytest.mark.mode_independent  # generated and compiled: no server, no core
@pytest.mark.processes("the generated clients run by tsc, node, elm-format and Chromium; the CLI")
def test_a_client_that_uses_a_field_wrongly_does_not_build(typescript: Path) -> None:
    (typescript / "use.ts").write_text(USE)
    done = compile_ts(typescript, "use.ts")
    assert done.returncode == 0, done.stdout
    cases = {
        "a renamed field": USE.replace("event.comment_id", "event.commentId"),
        "a wrong type": USE.replace("const who: string", "const who: number"),
        "a parameter of the wrong kind": USE.replace(
            'subscribeToComments("42"', "subscribeToComments(42"
        ),
        "an event of another stream": USE.replace(
            "CommentAdded(event, id)", "TaskComplete(event, id)"
        ),
        "a nullable used as a number": USE.replace("event.seconds ?? 0", "event.seconds + 1"),
    }
    files = {f"wrong{n}.ts": source for n, source in enumerate(cases.values())}
    for name, source in files.items():
        (typescript / name).write_text(source)
    done = compile_ts(typescript, *files)  # one tsc run: each file must have its error
    assert done.returncode != 0
    for (name, _), what in zip(files.items(), cases, strict=True):
        assert f"{name}(" in done.stdout and "error TS" in done.stdout, f"{what} compiled"


DECODE = """import * as events from "./events.js";
const cases = JSON.parse(process.argv[2]);
const out = [];
for (const [decoder, value] of cases) {
  try { out.push(["ok", events[decoder](value)]); }
  catch (error) { out.push([error.name, error.path, error.problem]); }
}
console.log(JSON.stringify(out));
"""


@pytest.mark.processes("the generated clients run by tsc, node, elm-format and Chromium; the CLI")
def test_the_decoders_refuse_what_does_not_fit(typescript: Path) -> None:
    done = compile_ts(typescript, "events.ts", emit=True)
    assert done.returncode == 0, done.stdout
    (typescript / "package.json").write_text('{"type": "module"}')
    (typescript / "decode.mjs").write_text(DECODE)
    good = {**GOOD, "tags": ["a"], "edited": False}
    cases = [
        ["decodeCommentAdded", good],
        ["decodeCommentAdded", {**good, "comment_id": 1.5}],
        ["decodeCommentAdded", {**good, "author": {"id": 3}}],
        ["decodeCommentAdded", {**good, "tags": ["a", 2]}],
        ["decodeCommentAdded", [good]],
        ["decodeSystemAlert", {"level": "loud", "message": "m"}],
        ["decodeTaskComplete", {"task_id": "t", "result": "r", "seconds": None}],
    ]
    done = subprocess.run(
        ["node", "decode.mjs", json.dumps(cases)],
        cwd=typescript,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        ["ok", good],
        ["DecodeError", "$.comment_id", "expected an integer"],
        ["DecodeError", "$.author.name", "expected a string"],
        ["DecodeError", "$.tags[1]", "expected a string"],
        ["DecodeError", "$", "expected an object"],
        ["DecodeError", "$.level", 'expected one of ["critical","info","warning"]'],
        ["ok", {"task_id": "t", "result": "r", "seconds": None}],
    ]


PAGE = """<!doctype html><meta charset="utf-8">
<script type="module">
  import {
    subscribeToActivity, subscribeToAlerts, subscribeToComments, subscribeToNotifications,
  } from "/generated/events.js";
  window.got = [];
  window.errors = [];
  window.opened = 0;
  const common = {
    onOpen: () => { window.opened += 1; },
    onError: (error) => window.errors.push(String(error)),
  };
  window.subscription = subscribeToComments("42", {
    ...common,
    CommentAdded: (event, id) => window.got.push(["added", event, id]),
    CommentDeleted: (event, id) => window.got.push(["deleted", event, id]),
  });
  subscribeToNotifications(7, {
    ...common,
    TaskComplete: (event, id) => window.got.push(["task", event, id]),
  });
  subscribeToAlerts({
    ...common,
    SystemAlert: (event, id) => window.got.push(["alert", event, id]),
  });
  subscribeToActivity(7, {
    ...common,
    ActivityNote: (event, id) => window.got.push(["activity", event, id]),
  });
</script>"""


@pytest.mark.processes("the generated clients run by tsc, node, elm-format and Chromium; the CLI")
def test_a_generated_client_receives_typed_events_in_chromium(typescript: Path) -> None:
    done = compile_ts(typescript, "events.ts", emit=True)
    assert done.returncode == 0, done.stdout
    script = (typescript / "events.js").read_text()
    with (
        ServerProcess("--schemas", "tests.support.typed_streams:with_pattern") as server,
        chromium() as browser,
    ):
        page = browser.new_page()
        page.route(server.url + "/typed", lambda r: r.fulfill(body=PAGE, content_type="text/html"))
        page.route(
            server.url + "/generated/events.js",
            lambda r: r.fulfill(body=script, content_type="text/javascript"),
        )
        page.goto(server.url + "/typed")
        page.wait_for_function("() => window.opened === 4", timeout=10_000)
        import httpx

        publishes = [
            ("item:42", "CommentAdded", GOOD),
            ("user:7", "TaskComplete", {"task_id": "t1", "result": "done"}),
            ("system/alerts", "SystemAlert", {"level": "warning", "message": "disk"}),
            ("item:42", "CommentDeleted", {"comment_id": 1}),
            # topics under the pattern stream's user/7/*, created after it subscribed
            ("user/7/likes", "ActivityNote", {"kind": "like", "text": "a like"}),
            ("user/7/orders/3", "ActivityNote", {"kind": "order", "text": "shipped"}),
        ]
        for topic, event, data in publishes:
            body = {"topic": topic, "event": event, "data": data}
            assert httpx.post(f"{server.url}/publish", json=body, timeout=5).status_code == 200
            # one at a time: the order across three streams is the order they arrive
            count = publishes.index((topic, event, data)) + 1
            page.wait_for_function(f"() => window.got.length === {count}", timeout=10_000)
        got = page.evaluate("window.got")
        assert [(kind, event) for kind, event, _ in got] == [
            ("added", {**GOOD, "tags": [], "edited": False}),
            ("task", {"task_id": "t1", "result": "done", "seconds": None}),
            ("alert", {"level": "warning", "message": "disk"}),
            ("deleted", {"comment_id": 1}),
            ("activity", {"kind": "like", "text": "a like"}),
            ("activity", {"kind": "order", "text": "shipped"}),
        ]
        assert all(re.fullmatch(r"\d+", id_) for _, _, id_ in got)
        assert page.evaluate("window.errors") == []
        comments_last = [id_ for kind, _, id_ in got if kind in ("added", "deleted")][-1]
        assert page.evaluate("window.subscription.lastEventId") == comments_last


@pytest.fixture(scope="module")
def elm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return generate(SCHEMA, "elm", module="App.Events")


def elm_format_validate(source: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """``elm-format --validate`` of ``source`` (as a file in ``directory``)."""
    path = directory / "Events.elm"
    path.write_text(source)
    return subprocess.run(
        [str(node_tools.elm_format()), "--validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.processes("the generated clients run by tsc, node, elm-format and Chromium; the CLI")
def test_the_elm_module_is_as_elm_format_writes_it(elm: str, tmp_path: Path) -> None:
    done = elm_format_validate(elm, tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
    # the check bites
    bad = elm.replace("    Decode.succeed", "  Decode.succeed", 1)
    assert elm_format_validate(bad, tmp_path).returncode != 0


ELM_DECODERS = {
    "int": "Decode.int",
    "float": "Decode.float",
    "str": "Decode.string",
    "bool": "Decode.bool",
}


def _elm_decoder(node: dict[str, Any], context: str) -> str:
    """What the Elm decoder of a schema node must be (the shapes the tests use)."""
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        return name[:1].lower() + name[1:] + "Decoder"
    if "enum" in node:
        return context[:1].lower() + context[1:] + "Decoder"
    if "anyOf" in node:
        (inner,) = [n for n in node["anyOf"] if n != {"type": "null"}]
        return f"(Decode.nullable {_elm_decoder(inner, context)})"
    if node.get("type") == "array":
        return f"(Decode.list {_elm_decoder(node['items'], context)})"
    kinds = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
    return ELM_DECODERS[kinds[node["type"]]]


def test_the_elm_decoders_read_the_schemas_shapes(elm: str) -> None:
    for name, definition in SCHEMA["$defs"].items():
        decoder = name[:1].lower() + name[1:] + "Decoder"
        block = re.search(rf"^{decoder} =\n(.*?)(?=\n\n\n|\Z)", elm, re.M | re.S)
        assert block, decoder
        assert f"Decode.succeed {name}" in block.group(1)
        fields = re.findall(r'andMap \(Decode\.field "([^"]+)" (.+)\)$', block.group(1), re.M)
        expected = [
            (field, _elm_decoder(node, name + field[:1].upper() + field[1:].replace("_", "")))
            for field, node in definition["properties"].items()
        ]
        assert fields == expected, name
        # the record's fields in the same order, named in camelCase
        alias = re.search(rf"^type alias {name} =\n(.*?)\n    }}", elm, re.M | re.S)
        assert alias, name
        names = re.findall(r"^    [{,] (\w+) :", alias.group(1), re.M)
        assert names == [
            re.sub(r"_(\w)", lambda m: m.group(1).upper(), f) for f in definition["properties"]
        ]
    # every stream: a variant per event, decoded by its event name
    for stream in SCHEMA["streams"].values():
        for event, reference in stream["events"].items():
            record = reference["$ref"].removeprefix("#/$defs/")
            assert f'"{event}" ->\n' in elm
            assert f"{record[:1].lower() + record[1:]}Decoder) data" in elm
    assert "systemAlertLevelDecoder" in elm and '"critical" ->' in elm


@pytest.mark.processes("the generated clients run by tsc, node, elm-format and Chromium; the CLI")
def test_codegen_from_a_running_edge_and_its_errors(tmp_path: Path) -> None:
    with ServerProcess("--schemas", "tests.support.typed_streams:with_pattern") as server:
        out = tmp_path / "events.ts"
        done = subprocess.run(
            [
                *(sys.executable, "-m", "sse_fast", "codegen", "--lang", "typescript"),
                *("--schema-url", f"{server.url}/schema", "--out", str(out)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert out.read_text() == generate(SCHEMA, "typescript")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sse_fast", "codegen", "--lang", "elm"),
            *("--schema-url", f"{server.url}/schema"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "cannot read the schema at" in done.stderr
    bad = {
        "streams": {"s": {"channel": "a", "events": {"E": {"$ref": "#/$defs/E"}}}},
        "$defs": {
            "E": {
                "type": "object",
                "properties": {"pair": {"type": "array", "prefixItems": [{}, {}]}},
            }
        },
    }
    with pytest.raises(CodegenError, match=r"\$defs/E/properties/pair: tuples"):
        generate(bad, "typescript")
    with pytest.raises(CodegenError, match="no 'streams'"):
        generate({}, "elm")


def test_node_tools_are_there() -> None:
    assert shutil.which("node"), "the decoder test runs node (Debian package nodejs)"


@pytest.mark.mode_independent  # generated and compiled: no server, no core
@pytest.mark.processes("the generated clients run by tsc, node, elm-format and Chromium; the CLI")
def test_enums_keywords_and_odd_names(tmp_path: Path) -> None:
    """enum.Enum and IntEnum fields, a field Elm reserves, a renamed field that is
    no identifier: both clients are generated, TypeScript compiles, Elm is as
    elm-format writes it."""
    stream = Stream("paint", "paint/{wall}", [Painted], description="a */ b")
    schema = Schemas([stream]).json_schema()
    (tmp_path / "events.ts").write_text(generate(schema, "typescript"))
    done = compile_ts(tmp_path, "events.ts")
    assert done.returncode == 0, done.stdout
    ts = (tmp_path / "events.ts").read_text()
    assert '"user-name": string;' in ts and 'colour: "dark-blue" | "red";' in ts
    assert "level: 1 | 2;" in ts and "a *\\/ b" in ts
    elm = generate(schema, "elm")
    done = elm_format_validate(elm, tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout
    assert "type_ : String" in elm and "userName : String" in elm
    assert 'Decode.field "user-name" Decode.string' in elm


@pytest.mark.parametrize(
    ("channel", "events", "message"),
    [
        ("a/{handlers}", "Painted", "a name the generated functions use"),
        ("a/{default}", "Painted", "a name the generated functions use"),
        ("a/{x}", "Record", "the generated clients use the name Record"),
    ],
)
def test_names_the_generated_code_uses_are_refused(channel: str, events: str, message: str) -> None:
    kind = msgspec.defstruct(events, [("a", int)])
    schema = Schemas([Stream("s", channel, [kind])]).json_schema()
    with pytest.raises(CodegenError, match=message):
        generate(schema, "typescript")
