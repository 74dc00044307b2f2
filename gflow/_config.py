"""Run configuration: a TOML file of four tables, validated field by field.

    seed = 0
    [data]   kind = "synthetic" | "digits", n, d, n_test, inputs, target, task, classes
    [model]  kind = "two-layer" | "multilayer" | "linear", width, features, depth, ...
    [flow]   t1, loss, solver, rtol, atol, max_steps, n_save, loss_target, eta
    [analysis] kernel, certificates, feature_learning, kernel_chunk, rel_tol
    [output] progress, save_params, checkpoint_seconds, segments

Every field has a type, a default and a range; an unknown key, a wrong type or a value
out of range raises `ConfigError` naming the field (e.g. `model.width`) and the fix,
before anything is compiled. `build(config)` turns a valid config into (model, data).
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from ._data._dataset import Dataset
from ._data._digits import TASKS, digit_images, load_digits
from ._data._synthetic import INPUTS, TARGETS, make_synthetic
from ._flow._solvers import SOLVERS
from ._models._activations import ACTIVATIONS
from ._models._base import AbstractModel
from ._models._linear import Linear
from ._models._losses import LOSSES
from ._models._multilayer import MultiLayer
from ._models._two_layer import TwoLayer

DIGITS_D = 64  # the digits images are 8 x 8 pixels


class ConfigError(ValueError):
    """A configuration field is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Field:
    default: Any
    types: tuple[type, ...]
    choices: tuple | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    optional: bool = False  # None (absent) allowed
    help: str = ""


_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_BOOL = (bool,)

SCHEMA: dict[str, dict[str, Field]] = {
    "data": {
        "kind": Field("synthetic", _STR, ("synthetic", "digits"), help="dataset"),
        "n": Field(32, _INT, minimum=1, help="number of training points"),
        "d": Field(64, _INT, minimum=1, help="input dimension (synthetic only)"),
        "n_test": Field(256, _INT, minimum=0, help="number of test points"),
        "inputs": Field("sphere", _STR, INPUTS, help="input law (synthetic)"),
        "target": Field("teacher", _STR, TARGETS, help="target function (synthetic)"),
        "teacher_width": Field(4, _INT, minimum=1, help="teacher neurons"),
        "noise": Field(0.0, _NUM, minimum=0.0, help="label noise std"),
        "task": Field(
            "parity", _STR, TASKS, help="digits task (+-1 targets, or 'classes': labels)"
        ),
        "classes": Field(10, _INT, minimum=2, help="digits task 'classes': digits 0..classes-1"),
        "seed": Field(None, _INT, optional=True, help="data seed (default: top-level seed)"),
    },
    "model": {
        "kind": Field("two-layer", _STR, ("two-layer", "multilayer", "linear"), help="model"),
        "width": Field(1024, _INT, minimum=1, help="m, trained-layer width"),
        "features": Field(256, _INT, minimum=1, help="D, random-feature width (multilayer)"),
        "depth": Field(3, _INT, minimum=3, help="layers (multilayer)"),
        "activation": Field("tanh", _STR, tuple(sorted(ACTIVATIONS)), help="s, trained layer"),
        "feature_activation": Field(
            "relu", _STR, tuple(sorted(ACTIVATIONS)), help="phi, random features"
        ),
        "scaling": Field("mf", _STR, ("mf", "mf-sqrt", "ntk"), help="see docs/time.md"),
        "train_first": Field(True, _BOOL, help="two-layer: train W"),
        "train_second": Field(True, _BOOL, help="two-layer: train c"),
        "train_output": Field(False, _BOOL, help="multilayer: train c"),
    },
    "flow": {
        "t1": Field(400.0, _NUM, minimum=0.0, exclusive_minimum=True, help="final time"),
        "loss": Field(
            "mse",
            _STR,
            LOSSES,
            help="training loss: squared error, logistic (+-1 labels), softmax cross-entropy",
        ),
        "solver": Field(
            "tsit5",
            _STR,
            tuple(sorted([*SOLVERS, "auto"])),
            help="diffrax solver; 'auto': tsit5, or on stiff least-squares flows exprb "
            "(affine residuals) or rosw",
        ),
        "rtol": Field(1e-8, _NUM, minimum=0.0, exclusive_minimum=True, help="relative tolerance"),
        "atol": Field(1e-10, _NUM, minimum=0.0, exclusive_minimum=True, help="absolute tolerance"),
        "dt0": Field(
            None,
            _NUM,
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            help="initial (or, for euler/heun, constant) step",
        ),
        "max_steps": Field(200_000, _INT, minimum=1, help="step limit (partial result kept)"),
        "n_save": Field(201, _INT, minimum=2, help="save times (half linear, half log)"),
        "loss_target": Field(
            None,
            _NUM,
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            help="stop once the loss is this small",
        ),
        "eta": Field(
            None,
            _NUM,
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            help="time scale (default: the model's natural eta)",
        ),
    },
    "analysis": {
        "kernel": Field(True, _BOOL, help="record the tangent kernel spectrum at save times"),
        "certificates": Field(True, _BOOL, help="check the bounds (needs kernel)"),
        "feature_learning": Field(True, _BOOL, help="layer movement, linearized flow"),
        "kernel_chunk": Field(None, _INT, minimum=1, optional=True, help="vjp batch size"),
        "rel_tol": Field(1e-5, _NUM, minimum=0.0, help="relative error allowed in L"),
    },
    "limit": {
        "follow": Field(
            False, _BOOL, help="after t1, follow the flow to its end and report the limit point"
        ),
        "grad_tol": Field(
            1e-8, _NUM, minimum=0.0, exclusive_minimum=True, help="stop once |grad L| <= this"
        ),
        "loss_tol": Field(
            None,
            _NUM,
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            help="stop once L <= this",
        ),
        "stall_rtol": Field(
            1e-3,
            _NUM,
            minimum=0.0,
            exclusive_minimum=True,
            help="stop when a window lowers L by less than this fraction",
        ),
        "t_max": Field(
            1e8, _NUM, minimum=0.0, exclusive_minimum=True, help="give up at this flow time"
        ),
        "solver": Field(
            "auto", _STR, tuple(sorted([*SOLVERS, "auto"])), help="solver of the windows"
        ),
        "polish": Field(
            False, _BOOL, help="Gauss-Newton (mse) or Newton polishing of the limit point"
        ),
    },
    "output": {
        "progress": Field(True, _BOOL, help="progress bar"),
        "save_params": Field(False, _BOOL, help="store parameters at every save time"),
        "checkpoint_seconds": Field(
            60.0,
            _NUM,
            minimum=0.0,
            help="wall-clock seconds between checkpoints (0: each segment)",
        ),
        "segments": Field(
            20, _INT, minimum=1, help="time segments (checkpoints are written at their ends)"
        ),
    },
}
TOP_LEVEL: dict[str, Field] = {
    "seed": Field(0, _INT, minimum=0, help="seed of the model init (and data, by default)"),
    "name": Field("run", _STR, help="a label stored in result.json"),
}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("number" if t is float else t.__name__ for t in types)


def _check_field(path: str, spec: Field, value: Any) -> Any:
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(f"{path}: is required.")
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        raise ConfigError(
            f"{path}: expected {_type_name(spec.types)}, got {type(value).__name__} {value!r}."
        )
    if spec.choices is not None and value not in spec.choices:
        folded = {c.lower(): c for c in spec.choices if isinstance(c, str)}
        if isinstance(value, str) and value.lower() in folded:  # "Tsit5" -> "tsit5"
            value = folded[value.lower()]
        else:
            hint = ""
            if isinstance(value, str):
                import difflib

                close = difflib.get_close_matches(value.lower(), list(folded), n=1)
                hint = f" Did you mean {folded[close[0]]!r}?" if close else ""
            raise ConfigError(f"{path}: must be one of {list(spec.choices)}, got {value!r}.{hint}")
    if spec.minimum is not None:
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{path}: must be finite, got {value!r}.")
        bad = value <= spec.minimum if spec.exclusive_minimum else value < spec.minimum
        if bad:
            op = ">" if spec.exclusive_minimum else ">="
            raise ConfigError(f"{path}: must be {op} {spec.minimum}, got {value!r}.")
    if float in spec.types and isinstance(value, int):
        value = float(value)
    return value


def _suggest(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Known keys: {', '.join(known)}."


def validate(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check every field. Returns a new, complete config dict."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a table, got {type(raw).__name__}.")
    out: dict[str, Any] = {}
    known_top = list(TOP_LEVEL) + list(SCHEMA)
    for key in raw:
        if key not in known_top:
            raise ConfigError(f"{key}: unknown top-level key.{_suggest(key, known_top)}")
    for key, spec in TOP_LEVEL.items():
        out[key] = _check_field(key, spec, raw.get(key, spec.default))
    for table, fields in SCHEMA.items():
        section = raw.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{table}: expected a table [{table}], got {section!r}.")
        for key in section:
            if key not in fields:
                raise ConfigError(f"{table}.{key}: unknown key.{_suggest(key, list(fields))}")
        out[table] = {
            key: _check_field(f"{table}.{key}", spec, section.get(key, spec.default))
            for key, spec in fields.items()
        }
    _cross_checks(out)
    data_raw = raw.get("data", {})
    if out["data"]["kind"] == "digits" and data_raw.get("d", DIGITS_D) != DIGITS_D:
        raise ConfigError(
            f"data.d: the digits images have d = {DIGITS_D} pixels, got d = {data_raw['d']}; "
            "remove data.d (it sets the input dimension of kind = 'synthetic' only)."
        )
    return out


def _cross_checks(cfg: dict[str, Any]) -> None:
    data, model = cfg["data"], cfg["model"]
    if data["kind"] == "digits":
        classes = data["task"] == "classes"
        if data["classes"] > 10:
            raise ConfigError(
                f"data.classes: the digits have 10 classes, got {data['classes']}; use 2..10."
            )
        total = digit_images(data["classes"] if classes else 10)
        if data["n"] + data["n_test"] > total:
            what = f"images of the digits 0..{data['classes'] - 1}" if classes else "digit images"
            raise ConfigError(
                f"data.n: n + n_test = {data['n'] + data['n_test']} exceeds the {total} "
                f"{what}; lower data.n or data.n_test."
            )
    _loss_checks(cfg)
    if model["kind"] == "two-layer" and model["scaling"] == "mf-sqrt":
        raise ConfigError(
            "model.scaling: 'mf-sqrt' applies to the multilayer model; the two-layer model "
            "takes 'mf' or 'ntk'."
        )
    flow = cfg["flow"]
    if flow["solver"] == "euler" and flow["dt0"] is None:
        raise ConfigError(
            "flow.dt0: solver 'euler' has no error estimate and needs a constant step; "
            "set flow.dt0 (e.g. 0.01) or pick an adaptive solver such as 'tsit5'."
        )
    if model["kind"] == "two-layer" and not (model["train_first"] or model["train_second"]):
        raise ConfigError("model.train_first: both layers frozen; train at least one.")
    if cfg["analysis"]["certificates"] and not cfg["analysis"]["kernel"]:
        raise ConfigError(
            "analysis.certificates: the certificates need the tangent kernel; set "
            "analysis.kernel = true or analysis.certificates = false."
        )


def _loss_checks(cfg: dict[str, Any]) -> None:
    """The loss, the targets and the model's number of outputs must fit together."""
    data, model, loss = cfg["data"], cfg["model"], cfg["flow"]["loss"]
    labels = data["kind"] == "digits" and data["task"] == "classes"
    binary = data["kind"] == "digits" and data["task"] in ("parity", "small-large")
    if loss == "cross-entropy" and not labels:
        raise ConfigError(
            "flow.loss: 'cross-entropy' needs class labels; set data.kind = \"digits\" and "
            "data.task = \"classes\" (with data.classes), or use loss 'mse'."
        )
    if loss == "logistic" and not binary:
        raise ConfigError(
            "flow.loss: 'logistic' needs +-1 labels; set data.kind = \"digits\" with "
            'data.task = "parity" or "small-large", or use \'cross-entropy\' for classes.'
        )
    if labels and model["kind"] != "two-layer":
        raise ConfigError(
            f'model.kind: data.task = "classes" needs one output per class, which only the '
            f"'two-layer' model has; got {model['kind']!r}."
        )


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read and validate a TOML config; None gives the built-in default."""
    if path is None:
        return validate({})
    return validate(read_toml(path, "config"))


def read_toml(path: str | Path, field: str) -> dict[str, Any]:
    """The table of a TOML file, with errors that name `field` (the config, a sweep, a
    sweep's base config) and the fix: a folder, a missing file, bad syntax, not UTF-8,
    unreadable."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{field}: {str(p)!r} is a folder; pass the path of a .toml file.")
    if not p.is_file():
        raise ConfigError(f"{field}: file {str(p)!r} does not exist; check the path.")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{field}: {p} is not valid TOML ({exc}); fix the syntax.") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{field}: {p} is not UTF-8 text; save it as a UTF-8 TOML file."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{field}: cannot read {p} ({exc.strerror}); check permissions."
        ) from None


def default_config() -> dict[str, Any]:
    return copy.deepcopy(validate({}))


def input_dim(cfg: dict[str, Any]) -> int:
    return DIGITS_D if cfg["data"]["kind"] == "digits" else cfg["data"]["d"]


def build_data(cfg: dict[str, Any]) -> Dataset:
    data = cfg["data"]
    seed = cfg["seed"] if data["seed"] is None else data["seed"]
    if data["kind"] == "digits":
        return load_digits(
            data["n"], n_test=data["n_test"], task=data["task"], classes=data["classes"], seed=seed
        )
    return make_synthetic(
        data["n"],
        data["d"],
        n_test=data["n_test"],
        inputs=data["inputs"],
        target=data["target"],
        teacher_width=data["teacher_width"],
        noise=data["noise"],
        seed=seed,
    )


def model_outputs(cfg: dict[str, Any]) -> int:
    """k: one output per class for data.task = "classes", else 1."""
    data = cfg["data"]
    return data["classes"] if data["kind"] == "digits" and data["task"] == "classes" else 1


def build_model(cfg: dict[str, Any], key: jax.Array | None = None) -> AbstractModel:
    mc = cfg["model"]
    d = input_dim(cfg)
    key = jax.random.key(cfg["seed"]) if key is None else key
    if mc["kind"] == "linear":
        return Linear(d, key=key)
    if mc["kind"] == "two-layer":
        return TwoLayer(
            d,
            mc["width"],
            activation=mc["activation"],
            scaling=mc["scaling"],
            train_first=mc["train_first"],
            train_second=mc["train_second"],
            outputs=model_outputs(cfg),
            key=key,
        )
    return MultiLayer(
        d,
        mc["features"],
        mc["width"],
        depth=mc["depth"],
        activation=mc["activation"],
        feature_activation=mc["feature_activation"],
        scaling=mc["scaling"],
        train_output=mc["train_output"],
        key=key,
    )


def dumps_toml(cfg: dict[str, Any]) -> str:
    """A config dict as TOML text (None values are left out)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    lines = [f"{k} = {fmt(cfg[k])}" for k in TOP_LEVEL if cfg.get(k) is not None]
    for table in SCHEMA:
        lines.append(f"\n[{table}]")
        lines += [f"{k} = {fmt(v)}" for k, v in cfg[table].items() if v is not None]
    return "\n".join(lines) + "\n"
