"""The one sweep engine: run independent points serially in this process or on Dask
distributed, and hand each outcome back as soon as it is known, so the caller stores it
before the next one finishes (a failing or interrupted sweep loses nothing already
computed).

Both sweeps use it: `gflow sweep` (a grid over a run config, `_sweep.py`; Dask by
default, `--workers 0` serial) and the reproductions (`gflow reproduce`,
`_experiments/_sweep.py`; serial: each point is already one vmapped solve over seeds).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """A finished point: its key, and either its value or the error (ok False)."""

    key: str
    ok: bool
    value: Any = None
    error: str = ""
    traceback: str = ""


def _serial(fn: Callable, items: Sequence[tuple[str, tuple]]) -> Iterator[Outcome]:
    for key, args in items:
        try:
            yield Outcome(key, True, fn(*args))
        except Exception as exc:  # one failed point must not lose the others
            yield Outcome(
                key, False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
            )


def _dask(
    fn: Callable,
    items: Sequence[tuple[str, tuple]],
    client: Any,
    workers: int | None,
    scheduler: str | None,
) -> Iterator[Outcome]:
    from distributed import Client, LocalCluster, as_completed

    cluster = own = None
    if client is None:
        if scheduler is not None:
            client = own = Client(scheduler)
        else:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = own = Client(cluster)
    try:
        futures = {
            client.submit(fn, *args, key=f"gflow-point-{key}", pure=False): key
            for key, args in items
        }
        for fut in as_completed(futures):
            key = futures[fut]
            try:
                yield Outcome(key, True, fut.result())
            except Exception as exc:  # the point raised, or its worker died (KilledWorker)
                yield Outcome(
                    key,
                    False,
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                )
    finally:
        if own is not None:
            own.close()
        if cluster is not None:
            cluster.close()


def run_points(
    fn: Callable[..., Any],
    items: Sequence[tuple[str, tuple]],
    *,
    serial: bool = True,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> Iterator[Outcome]:
    """Run fn(*args) for every (key, args) in `items`; yield one `Outcome` per point as it
    finishes (in order when serial, in completion order on Dask).

    Arguments:
        serial: run here, one after the other (no Dask needed). Otherwise on Dask: the
            given `client`, else the cluster at `scheduler`, else a `LocalCluster` of
            `workers` processes (default one per core), one thread each, closed at the end.
    """
    if serial:
        return _serial(fn, items)
    return _dask(fn, items, client, workers, scheduler)
