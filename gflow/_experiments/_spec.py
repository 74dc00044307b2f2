"""The named, versioned experiment configs shipped in gflow/_experiments/configs/*.toml.

Each file has `name`, `version`, `claim`, `title`, a `[settings]` table shared by all
sizes, and `[full]`, `[quick]`, `[tiny]` tables whose keys override `[settings]`:
"full" is what docs/reproduction.md reports, "quick" finishes in a few minutes on 2 CPU
cores, "tiny" is what the tests run.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from typing import Any

EXPERIMENTS = ("shallow-dn", "multilayer-any-d", "feature-learning", "generalization")
SIZES = ("full", "quick", "tiny")


def _check_name(name: Any) -> str:
    if name not in EXPERIMENTS:
        raise ValueError(
            f"name: unknown experiment {name!r}; use one of {list(EXPERIMENTS)} or 'all'."
        )
    return name


def load_spec(name: str, size: str = "full", seeds: int | None = None) -> dict[str, Any]:
    """The settings of experiment `name` at `size` ("full", "quick" or "tiny").

    Returns:
        {"name", "version", "claim", "title", "size", "settings": {...}} where settings is
        `[settings]` updated by the size's table, and `seeds` replaced when given.
    """
    _check_name(name)
    if size not in SIZES:
        raise ValueError(f"size: must be one of {list(SIZES)}, got {size!r}.")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"seeds: must be an integer >= 1, got {seeds!r}.")
    text = resources.files("gflow._experiments").joinpath("configs", f"{name}.toml").read_text()
    raw = tomllib.loads(text)
    for key in ("name", "version", "claim", "title", "settings", size):
        if key not in raw:
            raise ValueError(f"configs/{name}.toml: missing '{key}'; the packaged file is broken.")
    if raw["name"] != name:
        raise ValueError(f"configs/{name}.toml: name field is {raw['name']!r}, expected {name!r}.")
    settings = {**raw["settings"], **raw[size]}
    if seeds is not None:
        settings["seeds"] = seeds
    return {
        "name": name,
        "version": int(raw["version"]),
        "claim": int(raw["claim"]),
        "title": raw["title"],
        "size": size,
        "settings": settings,
    }


def settings_hash(spec: dict[str, Any], point: dict[str, Any]) -> str:
    """A short hash of what determines one sweep point's result (experiment name, version,
    settings, the point's own coordinates); a stored point with another hash is rerun."""
    blob = json.dumps(
        {k: spec[k] for k in ("name", "version", "settings")} | {"point": point},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
