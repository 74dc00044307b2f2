"""Print docs/config.md from the config schema: `python -m gflow._config_docs`."""

from __future__ import annotations

from ._config import SCHEMA, TOP_LEVEL, Field

HEADER = """# Configuration of `gflow run`

A run is one TOML file with a top-level `seed` and `name` and the tables below. Every
field is optional (`gflow run` with no file runs the built-in default);
`gflow run --print-config` prints the complete default. Unknown keys, wrong types and
out-of-range values are refused before anything is computed, with a one-line error naming
the field (e.g. `gflow: error: model.widht: unknown key. Did you mean 'width'?`).

This page is generated from `gflow/_config.py` (`SCHEMA`); after changing the schema,
regenerate it with `python -m gflow._config_docs > docs/config.md` (a test checks it).
"""


def _row(name: str, f: Field) -> str:
    kind = "number" if float in f.types else " or ".join(t.__name__ for t in f.types)
    allowed = ""
    if f.choices:
        allowed = ", ".join(f"`{c}`" for c in f.choices)
    elif f.minimum is not None:
        allowed = (">" if f.exclusive_minimum else ">=") + f" {f.minimum:g}"
    default = "(none)" if f.default is None else f"`{f.default}`"
    return f"| `{name}` | {kind} | {default} | {allowed} | {f.help} |"


def render() -> str:
    head = ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    lines = [HEADER, "## top level", "", *head]
    lines += [_row(k, f) for k, f in TOP_LEVEL.items()]
    for table, fields in SCHEMA.items():
        lines += ["", f"## [{table}]", "", *head]
        lines += [_row(k, f) for k, f in fields.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
