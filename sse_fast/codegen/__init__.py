"""``sse-fast codegen``: typed clients from the declared streams.

    sse-fast codegen --lang typescript --schemas myapp.events:streams --out events.ts
    sse-fast codegen --lang elm --schema-url http://127.0.0.1:8000/schema --out src/Events.elm

The input is the JSON Schema the edge serves at ``GET /schema``
(``sse_fast.schemas.Schemas.json_schema``): from the declarations
(``--schemas module:attribute``), a running edge (``--schema-url``) or a saved
copy (``--schema-file``). ``_model.py`` reads it into streams, records and
types (refusing, with the path, what it does not know); ``_typescript.py`` and
``_elm.py`` write them out. Every field of a record is required in the
generated types: the edge writes each declared event back whole, defaults
filled in.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._model import CodegenError, read

__all__ = ["CodegenError", "generate", "main"]

LANGUAGES = ("typescript", "elm")


def generate(schema: dict[str, Any], lang: str, module: str = "Events") -> str:
    """The source of a client in ``lang`` for ``schema`` (a ``GET /schema`` document)."""
    model = read(schema)
    if lang == "typescript":
        from ._typescript import write

        return write(model)
    if lang == "elm":
        from ._elm import write as write_elm

        return write_elm(model, module)
    raise CodegenError(f"no generator for {lang!r}; there are: {', '.join(LANGUAGES)}")


def _schema(args: argparse.Namespace) -> dict[str, Any]:
    if args.schemas:
        from .._startup import load_at_start
        from ..schemas import SchemaError

        try:  # as `serve` loads them: the current directory on the path, the errors said
            return load_at_start(args.schemas).json_schema()
        except SchemaError as exc:
            raise CodegenError(str(exc)) from None
    if args.schema_url:
        try:
            with urllib.request.urlopen(args.schema_url, timeout=10) as reply:
                document: dict[str, Any] = json.load(reply)
                return document
        except (OSError, ValueError) as exc:
            raise CodegenError(f"cannot read the schema at {args.schema_url}: {exc}") from None
    try:
        loaded: dict[str, Any] = json.loads(Path(args.schema_file).read_text())
        return loaded
    except (OSError, ValueError) as exc:
        raise CodegenError(f"cannot read the schema in {args.schema_file}: {exc}") from None


def main(argv: Sequence[str] | None = None, prog: str = "sse-fast codegen") -> int:
    """``sse-fast codegen``: write a typed client (``--lang``) for the streams declared in a
    module, a running edge's ``/schema`` or a saved copy; return the exit status (2 on error, said
    on stderr)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Write a typed client for the declared streams."
    )
    parser.add_argument("--lang", required=True, choices=LANGUAGES)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--schemas", help="module:attribute of the declared streams")
    source.add_argument("--schema-url", help="a running edge's /schema, e.g. http://h:8000/schema")
    source.add_argument("--schema-file", help="a saved copy of /schema")
    parser.add_argument("--out", help="the file to write (default: standard output)")
    parser.add_argument("--module", default="Events", help="the Elm module's name (default Events)")
    args = parser.parse_args(argv)
    try:
        source_code = generate(_schema(args), args.lang, args.module)
    except CodegenError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(source_code)
    else:
        sys.stdout.write(source_code)
    return 0
