"""The analyses `gflow run` records, configured by the `[analysis]` table.

`RunAnalysis(acfg, model, data, eta=, loss=)` builds the save-time metrics to pass to the flow
(tangent kernel spectrum, Schur bound, layer movement, predictions; pass them to
`Problem.from_model(model, data, loss, metrics=...)`, whose data args the predictions
read); `finish(sol, fit)` turns the recorded metrics into the certificate report, the
feature-learning summary, the arrays for trajectory.npz and the verdict lines.

The bound certificates and the linearized flow are statements about the squared-error
loss; with the logistic or cross-entropy loss they are skipped and the verdict says so
(the kernel spectrum and the layer movement are still recorded).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._data._dataset import Dataset
from .._flow._solution import Solution
from .._models._losses import one_hot
from .._problem import split_predictions
from ._certificates import CertificateReport, certify
from ._features import movement_metrics, neuron_movement, relative_movement
from ._kernel import KernelTrace, kernel_metrics
from ._linearized import linearized_flow, prediction_gap
from ._rate import RateFit
from ._schur import schur_applies, schur_metrics


@dataclass
class AnalysisResult:
    """What `RunAnalysis.finish` returns: JSON summary, npz arrays, verdict lines, and
    the curves the figures draw (None when not recorded)."""

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    verdict: list[str] = field(default_factory=list)
    kernel: KernelTrace | None = None
    report: CertificateReport | None = None
    schur: np.ndarray | None = None


class RunAnalysis:
    """Save-time metrics and post-processing for one run (see the module docstring).

    Arguments:
        acfg: the validated `[analysis]` table (kernel, certificates, feature_learning,
            kernel_chunk, rel_tol).
        model: initial model. data: the dataset. eta: the flow's scalar eta override or
            None (the model's own eta). loss: the training loss ("mse", "logistic",
            "cross-entropy"); certificates and the linearized flow need "mse".
    """

    def __init__(
        self, acfg: dict[str, Any], model: Any, data: Dataset, *, eta: Any = None, loss="mse"
    ):
        self.acfg, self.model, self.data, self.eta, self.loss = acfg, model, data, eta, loss
        x, y = data.x_train, data.y_train
        k = int(getattr(model, "outputs", 1))
        self.y_train = y if k == 1 else np.asarray(one_hot(y, k))
        self.y_test = data.y_test if k == 1 else np.asarray(one_hot(data.y_test, k))
        self.metrics: dict[str, Any] = {}
        self.schur_skip = schur_applies(model)
        if acfg["kernel"]:
            self.metrics.update(
                kernel_metrics(model, x, self.y_train, eta=eta, chunk_size=acfg["kernel_chunk"])
            )
            if self.schur_skip is None:
                self.metrics.update(schur_metrics(model, x, eta_w=eta))
        if acfg["feature_learning"]:
            self.metrics.update(movement_metrics(model))
            if loss != "mse":
                return
            # read from the problem's data args (Problem.from_model), so the forward
            # passes are shared with the loss and test_loss at every save time
            self.metrics["pred_train"] = split_predictions("train")
            if data.n_test:
                self.metrics["pred_test"] = split_predictions("test")

    def finish(self, sol: Solution, fit: RateFit | None) -> AnalysisResult:
        wall0 = time.perf_counter()
        res = AnalysisResult(summary={})
        if self.acfg["kernel"] and "kernel" in sol.metrics and sol.ts.size:
            self._kernel(sol, fit, res)
        if self.acfg["feature_learning"] and sol.ts.size:
            self._features(sol, res)
        res.summary["wall_seconds"] = time.perf_counter() - wall0
        return res

    def _kernel(self, sol: Solution, fit: RateFit | None, res: AnalysisResult) -> None:
        kt = KernelTrace.from_metric(sol.metrics["kernel"])
        res.kernel = kt
        res.arrays.update(
            kernel_eigvals=kt.eigvals,
            kernel_rayleigh=kt.rayleigh,
            kernel_change=kt.change,
            kernel_alignment=kt.alignment,
        )
        n = self.data.n
        res.summary["kernel"] = {
            "lambda_min": [float(kt.lambda_min[0]), float(kt.lambda_min[-1])],
            "lambda_max": [float(kt.lambda_max[0]), float(kt.lambda_max[-1])],
            "lower_rate_initial": 2.0 / n * float(kt.lambda_min[0]),
            "kernel_change_final": float(kt.change[-1]),
            "alignment": [float(kt.alignment[0]), float(kt.alignment[-1])],
        }
        if "schur" in sol.metrics:
            res.schur = np.asarray(sol.metrics["schur"])
            res.arrays["schur"] = res.schur
        if not self.acfg["certificates"]:
            return
        if self.loss != "mse":
            res.verdict.append(
                f"certificates: skipped (the bounds are for the squared-error loss, the run "
                f"uses {self.loss!r})"
            )
            return
        ok = np.isfinite(sol.loss) & (sol.loss > 0)
        k = int(np.argmin(ok)) if not ok.all() else ok.size  # leading run of usable losses
        if k < 3:
            res.verdict.append("certificates: skipped (fewer than 3 positive losses)")
            return
        if fit is not None and int(ok.sum()) != k:
            fit = None  # the fit skipped points inside the run: its indices differ
        rep = certify(
            sol.ts[:k],
            sol.loss[:k],
            kt.lambda_min[:k],
            n,
            fit=fit,
            lambda_max=kt.lambda_max[:k],
            rayleigh=kt.rayleigh[:k],
            schur=None if res.schur is None else res.schur[:k],
            rel_tol=self.acfg["rel_tol"],
        )
        res.report = rep
        res.summary["certificates"] = rep.to_dict()
        if self.schur_skip is not None:
            res.summary["certificates"]["schur_skipped"] = self.schur_skip
        res.arrays.update(
            lower_rate=rep.lower_rate, envelope=rep.envelope, envelope_loose=rep.envelope_loose
        )
        res.verdict += _certificate_lines(rep, self.schur_skip)

    def _features(self, sol: Solution, res: AnalysisResult) -> None:
        data, model = self.data, self.model
        move = relative_movement(model, sol.final)
        neurons = {}
        for name in move:
            nm = neuron_movement(model, sol.final, name)
            res.arrays[f"neuron_movement_{name}"] = nm
            neurons[name] = {
                "median": float(np.median(nm)),
                "max": float(np.max(nm)),
                "min": float(np.min(nm)),
            }
        if self.loss != "mse":
            res.summary["feature_learning"] = {
                "movement_final": move,
                "neuron_movement_final": neurons,
            }
            res.verdict.append(
                "feature learning: "
                + ", ".join(f"{k} moved {v:.3g}" for k, v in move.items())
                + (f"; kernel change {res.kernel.change[-1]:.3g}" if res.kernel else "")
                + "; linearized flow skipped (closed form for the squared-error loss only)"
            )
            return
        lin = linearized_flow(
            model,
            data.x_train,
            self.y_train,
            sol.ts,
            x_test=data.x_test if data.n_test else None,
            y_test=self.y_test if data.n_test else None,
            eta=self.eta,
            chunk_size=self.acfg["kernel_chunk"],
        )
        gap_train = prediction_gap(sol.metrics["pred_train"], lin.f_train)
        res.arrays.update(linearized_gap_train=gap_train, linearized_train_loss=lin.train_loss)
        fl: dict[str, Any] = {
            "movement_final": move,
            "neuron_movement_final": neurons,
            "linearized_gap_train_final": float(gap_train[-1]),
            "linearized_train_loss_final": float(lin.train_loss[-1]),
            "linearized_null_dims": lin.n_null,
        }
        line = "feature learning: " + ", ".join(f"{k} moved {v:.3g}" for k, v in move.items())
        if res.kernel is not None:
            line += f"; kernel change {res.kernel.change[-1]:.3g}"
        line += f"; |f - f_lin| train {gap_train[-1]:.3g}"
        if lin.f_test is not None:
            gap_test = prediction_gap(sol.metrics["pred_test"], lin.f_test)
            res.arrays.update(linearized_gap_test=gap_test, linearized_test_loss=lin.test_loss)
            fl["linearized_gap_test_final"] = float(gap_test[-1])
            fl["linearized_test_loss_final"] = float(lin.test_loss[-1])
            fl["test_loss_final"] = float(sol.metrics["test_loss"][-1])
            line += (
                f", test {gap_test[-1]:.3g}; test loss {fl['test_loss_final']:.3g} "
                f"(linearized {lin.test_loss[-1]:.3g})"
            )
        res.summary["feature_learning"] = fl
        res.verdict.append(line)


def _certificate_lines(rep: CertificateReport, schur_skip: str | None) -> list[str]:
    """One line per check: its verdict ("holds", "VIOLATED" or "inconclusive", the latter
    also when it covers too little of the run) and how much of the run it covers."""
    words = {"pass": "holds", "fail": "VIOLATED", "inconclusive": "inconclusive"}
    lines = []
    g = rep.check("gronwall")
    excl = f"; {g.n_excluded} floor points excluded" if g.n_excluded else ""
    lines.append(
        f"Gronwall envelope {words[g.status]} (min slack {g.slack:.3g} in log L; "
        f"{g.covers()}{excl})"
    )
    lr = rep.check("local_rate")
    lines.append(
        f"local rate >= (2/n) lambda_min(H): {words[lr.status]} at {lr.n_checked - lr.n_violations}"
        f"/{lr.n_checked} save times (min slack {lr.slack:.3g}; {lr.covers()})"
    )
    names = [c.name for c in rep.checks]
    if "schur" in names:
        s, st = rep.check("schur"), rep.check("schur_total")
        lines.append(
            f"Schur bound {words[s.status]} with slack {s.slack:.3g} (relative {s.rel_slack:.3g}); "
            f"lambda_min(H) >= lambda_min(H_W) {words[st.status]} ({s.covers()})"
        )
    elif schur_skip is not None:
        lines.append(f"Schur bound: not applicable ({schur_skip})")
    if "fitted_rate" in names:
        f = rep.check("fitted_rate")
        lines.append(f"{f.detail}: {words[f.status]} ({f.covers()})")
    return lines
