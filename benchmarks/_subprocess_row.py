"""Run one benchmark case in a fresh process (so its wall time includes start-up and
compiles, and its peak memory is its own) and read back the JSON row it prints."""

from __future__ import annotations

import json
import subprocess
from typing import Any

PREFIX = "ROW "


def emit(row: dict[str, Any]) -> None:
    """In the child: print the row for `run_row`."""
    print(PREFIX + json.dumps(row))


def run_row(cmd: list[str], ident: dict[str, Any], tail: int = 3000) -> dict[str, Any]:
    """Run `cmd`; its row, or `ident` with the error (the end of stderr) when it failed."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [x for x in done.stdout.splitlines() if x.startswith(PREFIX)]
    if done.returncode != 0 or not line:
        return {**ident, "error": done.stderr[-tail:]}
    return json.loads(line[0][len(PREFIX) :])


def show(row: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Print the chosen fields of a row on one line."""
    print(json.dumps({k: row.get(k) for k in keys}), flush=True)
