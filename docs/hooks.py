"""MkDocs hooks: the reference pages, generated from the code at every build so
they cannot drift from it.

* ``reference/options.md``: the settings' own definitions (``sse_fast.settings``),
  the source of ``sse-fast serve --help`` and the ``SSE_FAST_*`` variables;
* ``reference/http.md``: the routes (``sse_fast.app._routing.ROUTES``) and their
  endpoints' docstrings;
* ``reference/metrics.md``: every metric's name, type, labels and help text
  (``sse_fast.hub._catalogue.CATALOGUE``, the source of ``/metrics``);
* ``reference/cli.md``: the commands' ``--help``, run;
* ``reference/api/<module>.md``: one page per public module (mkdocstrings renders
  its ``__all__`` from the docstrings), listed in the nav under "Python API";
* ``benchmarks/results/<name>.png``: the benchmarks' committed plots
  (``benches/results/``), for the benchmarks page.

The page tests (``tests/e2e/test_docs.py``) import this file too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the package documented: the source tree's, or the installed one (the sdist check
#: runs the tests against the wheel, without the sources)
PACKAGE = Path(str(importlib.util.find_spec("sse_fast").origin)).parent  # type: ignore[union-attr]
API = "reference/api"

#: the public modules, in the nav's order: exactly the modules with no part of their
#: name starting with "_" (``public_modules()``; a difference fails the build and
#: ``tests/test_public_api.py``); every other module is internal and has no page
USER_MODULES = (
    "sse_fast",
    "sse_fast.frames",
    "sse_fast.compression",
    "sse_fast.client",
    "sse_fast.publisher",
    "sse_fast.starlette",
    "sse_fast.starlette.sse",
    "sse_fast.starlette.event",
    "sse_fast.aiohttp",
    "sse_fast.django",
    "sse_fast.app",
    "sse_fast.hub",
    "sse_fast.settings",
    "sse_fast.schemas",
    "sse_fast.codegen",
    "sse_fast.protocol",
    "sse_fast.publishing",
    "sse_fast.webhooks",
    "sse_fast.brokers",
    "sse_fast.brokers.local",
    "sse_fast.brokers.durable",
    "sse_fast.brokers.redis",
    "sse_fast.testing",
    "sse_fast.locust",
    "sse_fast.loadgen",
    "sse_fast.loadtarget",
    "sse_fast.cli",
)


def public_modules() -> list[str]:
    """Every module of the package with no part of its name starting with "_": one
    API page each, and the list ``tests/test_public_api.py`` checks (it loads this file;
    the docs build does not import the tests)."""
    names = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(("sse_fast", *parts)))
    return sorted(names)


def unlisted_modules() -> list[str]:
    """What ``USER_MODULES`` and the package disagree on (nothing: an empty list)."""
    found = set(public_modules())
    return sorted(found.symmetric_difference(USER_MODULES))


def api_page(module: str) -> str:
    return f"{API}/{module}.md"


# -- the options -------------------------------------------------------------


def _sections() -> list[tuple[type, list[dataclasses.Field[Any]]]]:
    """The settings by section: the bases of ``Settings`` in ``--help``'s order."""
    from sse_fast.settings import Settings

    seen: set[str] = set()
    out = []
    for base in reversed(Settings.__mro__[1:-1]):  # a dataclass's fields: last base first
        fields = [f for f in dataclasses.fields(base) if f.name not in seen]
        seen.update(f.name for f in dataclasses.fields(base))
        if fields:
            out.append((base, fields))
    return out


def _default(field: dataclasses.Field[Any]) -> str:
    value = field.default
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "off" if not value else "on"
    if isinstance(value, int) and value >= 10_000:
        return f"`{value}` ({value:,})".replace(",", "\u2009")
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _checks(name: str) -> str:
    """What the settings' checks accept of ``name`` (``Settings.validate``'s tables)."""
    from sse_fast.settings._checks import NON_NEGATIVE, POSITIVE, RANGES

    least, most, _ = RANGES.get(name, (None, None, ""))
    if least is not None and most is not None:
        return f"; {least:g} to {most:g}"
    if least is not None:
        return f"; at least {least:g}"
    sign = "above 0" if name in POSITIVE else "0 or more" if name in NON_NEGATIVE else ""
    if most is not None:
        return f"; {sign + ', ' if sign else ''}at most {most:g}"
    return f"; {sign}" if sign else ""


def options_page() -> str:
    out = [
        "# Options",
        "",
        "Every setting of `sse-fast serve` (and `sse-fast mirror`), generated from the "
        "settings' own definitions in `sse_fast/settings/`: the same text as "
        "`sse-fast serve --help`. Each one is a flag and an environment variable "
        "(the flag wins); embedded, `Settings(name=value)` or "
        "`Settings.from_env()` take the same names.",
        "",
        "Values are checked before anything starts: a wrong one stops the server "
        "with one line naming the setting and what it accepts (exit code 2).",
        "",
    ]
    for section, fields in _sections():
        title = (section.__doc__ or section.__name__).strip().split("\n")[0]
        heading, _, rest = title.partition(":")
        out += [f"## {heading.strip().rstrip('.')}", ""]
        if rest.strip():
            out += [rest.strip()[0].upper() + rest.strip()[1:], ""]
        for field in fields:
            flag = "--" + field.name.replace("_", "-")
            kind = "flag (no value)" if str(field.type) == "bool" else str(field.type)
            checks = _checks(field.name)
            doc = field.metadata["doc"]
            out += [
                f"### `{field.name}`",
                "",
                f"`{flag}` · `SSE_FAST_{field.name.upper()}` · {kind}{checks} · "
                f"default {_default(field)}",
                "",
                doc[0].upper() + doc[1:] + ("" if doc.endswith(".") else "."),
                "",
            ]
    return "\n".join(out)


# -- the HTTP API ------------------------------------------------------------


def http_page() -> str:
    import inspect

    from sse_fast.app._routing import ROUTES

    out = [
        "# HTTP API",
        "",
        "Every endpoint of the edge, generated from its route table "
        "(`sse_fast/app/_routing.py`) and the endpoints' own documentation. Errors are "
        'answered `{"error": "what is wrong"}` with the status named, and nothing is '
        "published; a refusal is counted in `sse_fast_refused_total` by reason "
        "([metrics](metrics.md)). Mounted inside another application, the paths are "
        "below the mount point.",
        "",
        "| method | path | who may call it |",
        "|---|---|---|",
    ]
    for route in ROUTES:
        anchor = route.path.strip("/").replace("/", "")
        out.append(f"| `{route.method}` | [`{route.path}`](#{anchor}) | {route.access} |")
    out.append("")
    for route in ROUTES:
        anchor = route.path.strip("/").replace("/", "")
        doc = inspect.getdoc(route.documented()) or ""
        out += [f"## `{route.method} {route.path}` {{#{anchor}}}", "", doc, ""]
        if route.path in GUIDES:
            out += [f"See also: {GUIDES[route.path]}.", ""]
    return _link_options("\n".join(out), "options.md")


#: the guide pages of each endpoint
GUIDES = {
    "/events": "[topics and resume](../edge/topics-and-resume.md), "
    "[authentication](../edge/auth.md), [limits](../edge/limits.md)",
    "/publish": "[publishing](../edge/publishing.md), [typed channels](../edge/typed-channels.md)",
    "/publish/stream": "[publishing many events](../edge/publishing.md)",
    "/livez": "[deployment](../operations/deployment.md)",
    "/healthz": "[deployment](../operations/deployment.md)",
    "/readyz": "[deployment](../operations/deployment.md), "
    "[graceful drain](../operations/drain.md)",
    "/metrics": "[the metrics reference](metrics.md), [metrics and stats](../edge/metrics.md)",
    "/stats": "[metrics and stats](../edge/metrics.md)",
    "/presence": "[presence](../edge/presence.md)",
    "/schema": "[typed channels](../edge/typed-channels.md)",
}


def _settings_pattern(underscored: bool = False) -> str:
    """A regex alternation of the settings' names, longest first (so that
    ``max_connections_per_ip`` is not read as ``max_connections``)."""
    from sse_fast.settings import Settings

    names = [f.name for f in dataclasses.fields(Settings) if "_" in f.name or not underscored]
    return "|".join(sorted(names, key=len, reverse=True))


def _tick(text: str) -> str:
    """Plain text with the settings it names (those with an underscore) in code."""
    import re

    return re.sub(rf"\b({_settings_pattern(underscored=True)})\b", r"`\1`", text)


def _link_options(text: str, options_page: str) -> str:
    """Each setting named in code (``name`` or `name`) links to its entry."""
    import re

    names = _settings_pattern()
    return re.sub(rf"``?({names})``?(?!\]|\()", rf"[`\1`]({options_page}#\1)", text)


# -- the metrics -------------------------------------------------------------


def metrics_page() -> str:
    from sse_fast.hub._catalogue import CATALOGUE, REFUSAL_REASONS

    out = [
        "# Metrics",
        "",
        "Every metric `GET /metrics` exposes (Prometheus text format), generated from "
        "the catalogue the exposition itself reads its names and help texts from "
        "(`sse_fast/hub/_catalogue.py`). With several workers the figures are the whole "
        "server's, whichever worker answers; the `worker` label names a worker's own.",
        "",
        "| metric | type | labels | present |",
        "|---|---|---|---|",
    ]
    for metric in CATALOGUE:
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "-"
        out.append(
            f"| [`{metric.name}`](#{metric.name}) | {metric.kind} | {labels} | {metric.when} |"
        )
    out.append("")
    for metric in CATALOGUE:
        out += [f"### `{metric.name}`", "", f"{metric.kind}. {_tick(metric.help)}", ""]
        if metric.name == "sse_fast_refused_total":
            out += ["Its reasons:", "", "| reason | refused |", "|---|---|"]
            out += [f"| `{reason}` | {_tick(what)} |" for reason, what in REFUSAL_REASONS.items()]
            out.append("")
    return _link_options("\n".join(out), "options.md")


# -- the command line --------------------------------------------------------


def _help(*argv: str) -> str:
    """``sse-fast <argv> --help``, run. ``loadgen`` needs its extra (httptools), which
    the ``docs`` extra includes: ``pip install -e '.[docs]'`` is enough to build."""
    env = {**os.environ, "COLUMNS": "88"}
    command = [sys.executable, "-m", "sse_fast", *argv, "--help"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(
            f"`sse-fast {' '.join((*argv, '--help'))}` failed (exit {done.returncode}) for "
            f"the command-line page: {done.stderr.strip()}; install the docs' dependencies "
            "with: pip install -e '.[docs]'"
        )
    return done.stdout.rstrip()


def _description(*argv: str) -> str:
    """A command's ``--help`` up to its options (its usage and description)."""
    return _help(*argv).split("\noptions:")[0].rstrip()


def cli_page() -> str:
    out = [
        "# Command line",
        "",
        "The `sse-fast` command (also `python -m sse_fast`): this page is its own "
        "`--help`, run at the build.",
        "",
        "## `sse-fast`",
        "",
        "```text",
        _help(),
        "```",
        "",
        "## `sse-fast serve`",
        "",
        "Its flags are the [options](options.md), one per setting, each also an "
        "`SSE_FAST_*` environment variable.",
        "",
        "```text",
        _description("serve"),
        "```",
        "",
        "## `sse-fast mirror`",
        "",
        "Every option of `serve`, and `--topic` (the same as `--upstream-topic`); see "
        "[mirror mode](../edge/mirror.md).",
        "",
        "```text",
        _description("mirror"),
        "```",
        "",
    ]
    for command, what in (
        ("loadgen", "The load generator; see [load testing](../load-testing.md)."),
        (
            "codegen",
            "Typed clients of the declared streams; see "
            "[typed channels](../edge/typed-channels.md).",
        ),
    ):
        out += [f"## `sse-fast {command}`", "", what, "", "```text", _help(command), "```", ""]
    return "\n".join(out)


# -- the Python API ----------------------------------------------------------


def api_index() -> str:
    out = [
        "# Python API",
        "",
        "One page per public module, generated from the docstrings of the names in "
        "its `__all__`. These modules and names are the API kept across releases; "
        "every other module's name starts with `_` (such as `sse_fast.hub._fanout`): "
        "the server's own parts, which may change in any release (the "
        "[architecture](../../architecture.md) page describes them for contributors).",
        "",
    ]
    out += [f"- [`{name}`]({name}.md): {_summary(name)}" for name in USER_MODULES]
    return "\n".join(out) + "\n"


def _summary(module: str) -> str:
    """The first paragraph of the module's docstring, read without importing it
    (importing ``sse_fast.locust`` patches the process for gevent)."""
    import ast

    path = _source(module)
    doc = (ast.get_docstring(ast.parse(path.read_text())) or "").strip()
    first = doc.split("\n\n")[0].replace("\n", " ")
    return first.replace("``", "`")


def _source(module: str) -> Path:
    path = PACKAGE.parent / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _exports(module: str) -> list[str]:
    """The module's ``__all__``, read without importing it."""
    import ast

    path = _source(module)
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return [str(name) for name in ast.literal_eval(node.value)]
    return []


def module_page(module: str) -> str:
    names = _exports(module)
    sections = _settings_sections() if module == "sse_fast.settings" else []
    members = "".join(f"\n        - {name}" for name in names if name not in sections)
    page = (
        f"# `{module}`\n\n::: {module}\n    options:\n      show_root_heading: false\n"
        f"      members:{members or ' []'}\n"
    )
    if sections:  # their fields are the options, on the options page (one place to find each)
        page += (
            "\n## The sections\n\n`Settings` is the sections put together; `settings.limits` "
            "and the others give each as a value of its own. Their fields are the "
            "[options](../options.md).\n"
        )
        for name in sections:
            page += (
                f"\n::: {module}.{name}\n    options:\n      show_root_heading: true\n"
                "      members: false\n"
            )
    return page


def _settings_sections() -> list[str]:
    """The names of the settings' section classes (``Settings``' bases), in order."""
    return [section.__name__ for section, _ in _sections()]


# -- the hooks ---------------------------------------------------------------


def on_config(config: Any) -> Any:
    """Expand the nav's "Python API" into a page per public module."""
    unlisted = unlisted_modules()
    if unlisted:
        raise ValueError(
            f"docs/hooks.py: USER_MODULES and the package's public modules differ: {unlisted}; "
            "list a new public module in USER_MODULES, or name it with a leading underscore"
        )
    api = [f"{API}/index.md", *({name: api_page(name)} for name in USER_MODULES)]
    for section in config["nav"]:
        if isinstance(section, dict) and "Reference" in section:
            for i, entry in enumerate(section["Reference"]):
                if isinstance(entry, dict) and "Python API" in entry:
                    section["Reference"][i] = {"Python API": api}
    return config


def generated_pages() -> dict[str, str]:
    pages = {
        "reference/options.md": options_page(),
        "reference/http.md": http_page(),
        "reference/metrics.md": metrics_page(),
        "reference/cli.md": cli_page(),
        f"{API}/index.md": api_index(),
    }
    pages.update({api_page(name): module_page(name) for name in public_modules()})
    return pages


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for path, content in generated_pages().items():
        files.append(File.generated(config, path, content=content))
    # the benchmarks' committed plots, where the benchmarks page shows them
    for plot in sorted((ROOT / "benches" / "results").glob("*.png")):
        files.append(
            File.generated(config, f"benchmarks/results/{plot.name}", abs_src_path=str(plot))
        )
    return files
