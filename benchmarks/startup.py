"""What a user waits for before and around the solve, each in a fresh process:

- `python -c "import gflow"` and `gflow --help` (median of --repeats runs), and, for
  reference, `import jax` and `import ml_dtypes` (docs/dependencies.md);
- `gflow run` (the built-in default) end to end, the first time with an empty persistent
  compilation cache and then again with the cache it filled, --repeats pairs; with the
  compile and run seconds of the solve that each run recorded in result.json, and where
  the second run's program came from (the disk store of compiled programs);
- the first call of `gflow.simulate` on the default problem in a fresh process without
  the persistent cache: compile seconds (trace + lower + XLA) and the whole call.

Writes benchmarks/results/startup.json (or --out). Run from the repository root:
    python benchmarks/startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST_CALL = r"""
import time, json
t = time.perf_counter()
import gflow
from gflow._config import default_config, build_data, build_model
from gflow._problem import simulate_mse
cfg = default_config()
data = build_data(cfg); model = build_model(cfg)
t1 = time.perf_counter()
sol = simulate_mse(model, data, cfg["flow"]["t1"], rtol=cfg["flow"]["rtol"],
                   atol=cfg["flow"]["atol"])
t2 = time.perf_counter()
print(json.dumps({"setup": t1 - t, "call": t2 - t1, "compile": sol.stats["compile_seconds"],
                  "run": sol.stats["run_seconds"]}))
"""


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, out.stdout


def _versions() -> dict:
    from importlib.metadata import version

    return {n: version(n) for n in ("jax", "jaxlib", "ml_dtypes", "numpy", "diffrax", "equinox")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "startup.json"))
    args = ap.parse_args(argv)
    gflow_bin = str(Path(sys.executable).parent / "gflow")
    base_env = {**os.environ, "MPLBACKEND": "Agg"}
    res: dict = {"loadavg_at_start": os.getloadavg()}

    res["import_gflow"] = [
        timed([sys.executable, "-c", "import gflow"], base_env)[0] for _ in range(args.repeats)
    ]
    res["gflow_help"] = [timed([gflow_bin, "--help"], base_env)[0] for _ in range(args.repeats)]
    res["import_jax"] = [
        timed([sys.executable, "-c", "import jax"], base_env)[0] for _ in range(args.repeats)
    ]
    res["import_ml_dtypes"] = [
        timed([sys.executable, "-c", "import ml_dtypes"], base_env)[0] for _ in range(args.repeats)
    ]

    runs = []
    for _ in range(args.repeats):
        cache = tempfile.mkdtemp(prefix="gflow-bench-xla-")
        env = {**base_env, "GFLOW_CACHE_DIR": cache}
        pair = {}
        for which in ("first", "second"):
            out = tempfile.mkdtemp(prefix="gflow-bench-run-")
            wall, _ = timed([gflow_bin, "run", "--out", out, "--no-progress"], env)
            stats = json.loads((Path(out) / "result.json").read_text())["stats"]
            pair[which] = {
                "wall": wall,
                "compile_seconds": stats["compile_seconds"],
                "run_seconds": stats["run_seconds"],
                # "compiled", or "disk": loaded from the store of compiled programs
                "program_source": stats.get("program_source"),
            }
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        runs.append(pair)
        print(json.dumps(pair), flush=True)
    res["gflow_run"] = runs

    env = {**base_env, "GFLOW_COMPILE_CACHE": "0"}
    res["first_call"] = [
        json.loads(timed([sys.executable, "-c", FIRST_CALL], env)[1].strip().splitlines()[-1])
        for _ in range(args.repeats)
    ]

    def med(xs):
        return statistics.median(xs)

    res["summary"] = {
        "import_gflow_median": med(res["import_gflow"]),
        "gflow_help_median": med(res["gflow_help"]),
        "gflow_run_first_median": med([r["first"]["wall"] for r in runs]),
        "gflow_run_second_median": med([r["second"]["wall"] for r in runs]),
        "first_compile_median": med([r["compile"] for r in res["first_call"]]),
        "first_call_median": med([r["call"] for r in res["first_call"]]),
        "targets": {
            "import_and_help_le_0.5s": max(med(res["import_gflow"]), med(res["gflow_help"])) <= 0.5,
            "run_first_le_10s": med([r["first"]["wall"] for r in runs]) <= 10.0,
            "run_second_le_4s": med([r["second"]["wall"] for r in runs]) <= 4.0,
            "first_compile_le_1.5s": med([r["compile"] for r in res["first_call"]]) <= 1.5,
        },
    }
    res["meta"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_at_end": os.getloadavg(),
        "versions": _versions(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res["summary"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
