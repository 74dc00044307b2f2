"""The named, versioned experiment configs shipped in gflow/_experiments/configs/*.toml.

Each file has `name`, `version`, `claim`, `title`, a `[settings]` table shared by all
sizes, and `[full]`, `[quick]`, `[tiny]` tables whose keys override `[settings]`:
"full" is what docs/reproduction.md reports, "quick" finishes in a few minutes on 2 CPU
cores, "tiny" is what the tests run.
"""

from __future__ import annotations

import hashlib
import itertools
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
    _check_models(name, size, settings)
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


# The model of an experiment is a run config's [model] table (the `gflow run` schema and
# its errors), built by `_config.build_model`: one place constructs models for `gflow run`,
# `gflow sweep` and the reproductions. (generalization parametrizes its arms itself:
# paired raw draws shared by the arms, docs/reproduction.md.)
MODEL_KIND = {
    "shallow-dn": "two-layer",
    "multilayer-any-d": "multilayer",
    "feature-learning": "multilayer",
}
_MODEL_FIELDS = ("width", "features", "depth", "activation", "feature_activation", "scaling")
_TWO_LAYER_FIELDS = ("width", "activation", "scaling")


def model_config(name: str, settings: dict[str, Any], **point: Any) -> dict[str, Any]:
    """The validated run config (`gflow run` schema) of experiment `name`'s model at one
    point (d, and m / scaling / train_output where the point sets them)."""
    from .._config import validate  # imports JAX: not at `gflow --help` time

    kind = MODEL_KIND[name]
    s = {**settings, **point}
    fields = _TWO_LAYER_FIELDS if kind == "two-layer" else _MODEL_FIELDS
    model = {"kind": kind, **{k: s[k] for k in fields if k in s}}
    if kind == "multilayer":
        model["train_output"] = bool(s.get("train_output", False))
    return validate({"model": model, "data": {"n": int(s["n"]), "d": s["d"]}})


def model_builder(name: str, settings: dict[str, Any], **point: Any):
    """key -> the experiment's model at one point (`build_model` of `model_config`)."""
    from .._config import build_model

    cfg = model_config(name, settings, **point)
    return lambda key: build_model(cfg, key)


def _grid(settings: dict[str, Any], key: str, point_key: str) -> list[tuple[str, Any]]:
    values = settings.get(key)
    if values is None:
        return [(point_key, None)]
    return [(point_key, v) for v in (values if isinstance(values, list) else [values])]


def _check_models(name: str, size: str, settings: dict[str, Any]) -> None:
    """Every model the experiment will build at this size is a valid run-config model,
    checked before anything runs; errors name the packaged file and the field."""
    if name not in MODEL_KIND:
        return
    from .._config import ConfigError

    axes = [
        _grid(settings, "d", "d"),
        _grid(settings, "widths", "width"),
        _grid(settings, "scalings", "scaling"),
        [("train_output", h == "Wc") for h in settings.get("heads", [])]
        or [("train_output", None)],
    ]
    for combo in itertools.product(*axes):
        point = {k: v for k, v in combo if v is not None}
        try:
            model_config(name, settings, **point)
        except ConfigError as exc:
            raise ConfigError(
                f"configs/{name}.toml [{size}]: {exc} (at {point or 'every point'})"
            ) from None
