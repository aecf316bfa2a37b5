"""The improvement study: train each recipe on the same splits and compare them on the same holdout.

Every recipe sees the notebook's splits of the same CSV. Each is judged by its train-split fit (the
notebook's preliminary model) on the val + test rows, which none of them has seen; AUC intervals come from
one paired bootstrap over those rows, so the differences to the notebook recipe have honest intervals.
Training time is the whole `train()` call (selection, both GLM fits, metadata), as process CPU time
(comparable on a shared machine) and wall time.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from service.model.evaluation import evaluate_models
from service.model.training import Recipe, train

BASELINE = "notebook"


@dataclass(frozen=True)
class StudyRow:
    recipe: str
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    auc_vs_baseline: float
    auc_vs_baseline_ci_low: float
    auc_vs_baseline_ci_high: float
    log_loss: float
    brier: float
    calibration_error: float
    features_kept: int
    selection_vs_baseline: str  # L1-selected inputs added / dropped relative to the baseline recipe
    chosen_C: float
    max_phat_diff_vs_baseline: float  # largest |phat - baseline phat| on the holdout
    seconds: float
    cpu_seconds: float  # process CPU time: comparable on a busy machine, where wall time is not


@dataclass(frozen=True)
class Study:
    rows: list[StudyRow]
    baseline: str
    holdout_rows: int
    data_rows: int
    resamples: int


def run_study(frame: pd.DataFrame, recipes: Sequence[Recipe], *, resamples: int = 1_000) -> Study:
    if not recipes:
        raise ValueError("no recipes to compare")
    baseline = BASELINE if any(r.name == BASELINE for r in recipes) else recipes[0].name
    scores: dict[str, np.ndarray] = {}
    outcomes: dict[str, np.ndarray] = {}
    info: dict[str, tuple[int, float, float, float]] = {}
    selected: dict[str, set[str]] = {}
    y: np.ndarray | None = None
    holdout_index: pd.Index | None = None
    for recipe in recipes:
        cpu = time.process_time()
        result = train(frame, recipe)
        cpu = time.process_time() - cpu
        splits = result.extra["splits"]
        X = pd.concat([splits.X_val, splits.X_test])
        if holdout_index is None:
            holdout_index = X.index
            y = pd.concat([splits.y_val, splits.y_test]).to_numpy(dtype=np.int64)
        elif not X.index.equals(holdout_index):  # pragma: no cover - the split is deterministic
            raise AssertionError("recipes were not evaluated on the same holdout")
        model = result.extra["train_split_model"]
        p = model.phat(X)
        scores[recipe.name] = p
        outcomes[recipe.name] = (p > model.cutoff).astype(np.int64)
        training = result.metadata["training"]
        info[recipe.name] = (int(training["features_kept"]), float(training["chosen_C"]), result.seconds, cpu)
        selected[recipe.name] = set(result.model.pipeline.named_steps["select"].selected_features_)
    assert y is not None
    evaluations, differences = evaluate_models(y, scores, outcomes, resamples=resamples, baseline=baseline)
    rows = []
    for name, ev in evaluations.items():
        diff = differences.get(name, {"auc": 0.0, "auc_ci95": [0.0, 0.0]})
        kept, chosen_c, seconds, cpu_seconds = info[name]
        added = len(selected[name] - selected[baseline])
        dropped = len(selected[baseline] - selected[name])
        rows.append(
            StudyRow(
                recipe=name,
                auc=ev.auc,
                auc_ci_low=ev.auc_ci[0],
                auc_ci_high=ev.auc_ci[1],
                auc_vs_baseline=float(diff["auc"]),
                auc_vs_baseline_ci_low=float(diff["auc_ci95"][0]),
                auc_vs_baseline_ci_high=float(diff["auc_ci95"][1]),
                log_loss=ev.log_loss,
                brier=ev.brier,
                calibration_error=ev.calibration_error,
                features_kept=kept,
                selection_vs_baseline=f"+{added}/-{dropped}",
                chosen_C=chosen_c,
                max_phat_diff_vs_baseline=float(np.max(np.abs(scores[name] - scores[baseline]))),
                seconds=seconds,
                cpu_seconds=cpu_seconds,
            )
        )
    return Study(rows, baseline, int(y.size), len(frame), resamples)


def _ci(low: float, high: float, digits: int = 4) -> str:
    if math.isnan(low):
        return "-"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def markdown(study: Study) -> str:
    head = (
        "| recipe | AUC (95% CI) | ΔAUC vs " + study.baseline + " (95% CI) | log loss | Brier | "
        "calibration error | features kept | selection vs " + study.baseline + " | C | max \\|Δphat\\| | "
        "training time, CPU (wall) s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in study.rows:
        delta = (
            "(baseline)"
            if r.recipe == study.baseline
            else f"{r.auc_vs_baseline:+.4f} {_ci(r.auc_vs_baseline_ci_low, r.auc_vs_baseline_ci_high)}"
        )
        lines.append(
            f"| {r.recipe} | {r.auc:.4f} {_ci(r.auc_ci_low, r.auc_ci_high)} | {delta} | {r.log_loss:.4f} | "
            f"{r.brier:.4f} | {r.calibration_error:.4f} | {r.features_kept} | {r.selection_vs_baseline} | "
            f"{r.chosen_C:g} | {r.max_phat_diff_vs_baseline:.2g} | {r.cpu_seconds:.1f} ({r.seconds:.1f}) |"
        )
    foot = (
        f"\n{study.data_rows} rows; holdout = val + test splits ({study.holdout_rows} rows, unseen by every "
        f"recipe's train-split fit); {study.resamples} paired bootstrap resamples.\n"
    )
    return head + "\n".join(lines) + "\n" + foot


def save(study: Study, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "study.csv", out_dir / "study.md", out_dir / "study.json"]
    with paths[0].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(StudyRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in study.rows)
    paths[1].write_text(markdown(study))
    paths[2].write_text(
        json.dumps(
            {
                "baseline": study.baseline,
                "data_rows": study.data_rows,
                "holdout_rows": study.holdout_rows,
                "resamples": study.resamples,
                "rows": [asdict(r) for r in study.rows],
            },
            indent=1,
        )
    )
    return paths
