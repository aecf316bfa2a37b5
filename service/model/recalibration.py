"""The recalibrated champion: the champion's own features and coefficients, its logit refit on new labels.

With lp the champion's linear predictor (its model inputs x its coefficients, plus its intercept), the
new labels are fit as y ~ Bernoulli(sigmoid(a + b * lp)) (two parameters, maximum likelihood). The
challenger is the champion with coefficients b * coef and intercept a + b * intercept: everything else
(parsing, imputation, scaling, dummies, the selected features, their order) is the champion's, untouched,
so it ranks customers as the champion does (for b > 0) and only its probabilities move. Recalibration
needs a few labels per parameter, not a few per feature, which is why it often beats a full refit on the
modest samples a prediction log gives.

Like the notebook recipe, two fits are made on the same splits (service/model/training.py):
- on the train split only: the model the gate evaluates on the val + test rows (it has not seen them);
- on all rows: the registered version.

The cutoff is explicit: KEEP carries the champion's approved cutoff unchanged (the business rule stays
"phat above this value", though phat itself has moved, so the share of positive outcomes changes);
RECOMPUTE applies the recipe's rule (the quantile `cutoff_quantile` of the new model's phat on all rows).

The artifact is a full version: its golden rows are the champion's inputs with the new expected phat,
its reference distributions are those of the new rows, and its metadata says `recalibrated_from` and
holds the fitted a and b with their standard errors.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from service.errors import DataValidationError
from service.model.artifact import FittedModel, LoadedArtifact
from service.model.evaluation import LogisticLine, auc, fit_logistic_line
from service.model.profile import reference_distributions
from service.model.schema import InputSchema
from service.model.training import GOLDEN_ROWS, TrainingResult, split_like_notebook

RECIPE = "recalibrated"
KEEP, RECOMPUTE = "keep", "recompute"
CUTOFF_POLICIES = (KEEP, RECOMPUTE)
DEFAULT_CUTOFF_QUANTILE = 0.75


def recalibrated_model(model: FittedModel, line: LogisticLine, cutoff: float) -> FittedModel:
    """The champion with its logit mapped through a + b * lp; the same (shared) fitted Pipeline."""
    return FittedModel(
        pipeline=model.pipeline,
        coefficients=line.slope * np.asarray(model.coefficients, dtype=np.float64),
        cutoff=float(cutoff),
        intercept=line.intercept + line.slope * float(model.intercept),
    )


def _cutoff(
    policy: str, champion: FittedModel, phat: np.ndarray, quantile: float, rows: int
) -> tuple[float, str]:
    if policy == KEEP:
        return float(champion.cutoff), "kept: the champion's approved cutoff, unchanged"
    return (
        float(np.quantile(phat, quantile)),
        f"recomputed: quantile {quantile} of the recalibrated model's phat on all {rows} training rows",
    )


def _standard_errors(champion: LoadedArtifact, line: LogisticLine) -> tuple[dict[str, float], float]:
    """Delta-method standard errors of b * coef_j (and of a + b * intercept): the new labels are
    independent of the champion's training rows, so its estimates and (a, b) are taken as uncorrelated."""
    model = champion.model
    known = champion.metadata.get("standard_errors") or {}
    out: dict[str, float] = {}
    for feature, coef in zip(model.feature_names, model.coefficients, strict=True):
        se = float(known.get(feature) or 0.0)
        out[feature] = float(np.sqrt((coef * line.slope_se) ** 2 + (line.slope * se) ** 2))
    i0 = float(model.intercept)
    i0_se = float(champion.metadata.get("intercept_se") or 0.0)
    variance = (
        line.intercept_se**2
        + (i0 * line.slope_se) ** 2
        + 2 * i0 * line.covariance
        + (line.slope * i0_se) ** 2
    )
    return out, float(np.sqrt(max(variance, 0.0)))


def _summary(champion: LoadedArtifact, line: LogisticLine, rows: int) -> str:
    return (
        f"Recalibrated champion: {champion.metadata.get('name', 'propensity')}/{champion.version} "
        f"(sha256 {champion.sha256[:12]})\n"
        f"Logistic fit of the label on the champion's linear predictor lp, {rows} rows:\n"
        f"  y ~ a + b * lp\n"
        f"  a = {line.intercept:.6f} (SE {line.intercept_se:.6f})\n"
        f"  b = {line.slope:.6f} (SE {line.slope_se:.6f})\n"
        f"  log likelihood {line.log_likelihood:.4f}, converged {line.converged}\n"
        "Coefficients: b x the champion's; intercept: a + b x the champion's; features and their\n"
        "preprocessing: the champion's, unchanged.\n"
    )


def recalibrate(
    champion: LoadedArtifact,
    frame: pd.DataFrame,
    schema: InputSchema,
    *,
    cutoff: str = KEEP,
    cutoff_quantile: float = DEFAULT_CUTOFF_QUANTILE,
) -> TrainingResult:
    """The recalibrated champion as a TrainingResult shaped like train()'s (model, metadata, summary,
    extra["splits"], extra["train_split_model"]), ready for the gate and for Registry.publish."""
    if cutoff not in CUTOFF_POLICIES:
        raise ValueError(f"cutoff policy must be one of {', '.join(CUTOFF_POLICIES)}, got {cutoff!r}")
    started = time.perf_counter()
    target = schema.target
    y_all = frame[target].to_numpy(dtype=np.float64)
    if np.unique(y_all).size < 2:
        raise DataValidationError(f"recalibration needs both classes in column {target}")
    splits = split_like_notebook(frame, target)
    base = champion.model
    X_all = frame.drop(columns=[target])
    lp_all = base.linear_predictor(X_all)
    lp_train = base.linear_predictor(splits.X_train)
    final = fit_logistic_line(lp_all, y_all)
    preliminary = fit_logistic_line(lp_train, splits.y_train.to_numpy(dtype=np.float64))

    phat_all = 1.0 / (1.0 + np.exp(-(final.intercept + final.slope * lp_all)))
    value, rule = _cutoff(cutoff, base, phat_all, cutoff_quantile, len(frame))
    model = recalibrated_model(base, final, value)
    phat_train = 1.0 / (1.0 + np.exp(-(preliminary.intercept + preliminary.slope * lp_train)))
    train_cutoff, _ = _cutoff(cutoff, base, phat_train, cutoff_quantile, len(splits.X_train))
    train_split_model = recalibrated_model(base, preliminary, train_cutoff)

    golden = champion.metadata.get("golden_rows") or {}
    inputs = list(golden.get("inputs") or [])[:GOLDEN_ROWS] or splits.X_val.head(GOLDEN_ROWS).to_dict(
        "records"
    )
    golden_phat = model.phat(pd.DataFrame(inputs))
    standard_errors, intercept_se = _standard_errors(champion, final)
    parsed_train = base.pipeline.named_steps["parse"].transform(splits.X_train)
    auc_by_split = {
        name: auc(
            getattr(splits, f"y_{name}").to_numpy(), train_split_model.phat(getattr(splits, f"X_{name}"))
        )
        for name in ("train", "val", "test")
    }
    fit = {"final": final.as_dict(), "train_split": preliminary.as_dict()}
    metadata: dict[str, Any] = {
        "description": f"The champion {champion.version}, recalibrated on new labelled rows",
        "recalibrated_from": champion.version,
        "recalibration": {
            "model": "y ~ a + b * lp, lp = the champion's linear predictor",
            "a": final.intercept,
            "b": final.slope,
            "a_se": final.intercept_se,
            "b_se": final.slope_se,
            "champion_sha256": champion.sha256,
            "fits": fit,
        },
        "training": {
            "source": "recalibration",
            "recipe": RECIPE,
            "recalibrated_from": champion.version,
            "champion_training": champion.metadata.get("training"),
            "rows": len(frame),
            "splits": splits.sizes,
            "class_balance": {str(k): int(v) for k, v in frame[target].value_counts().sort_index().items()},
            "seconds": round(time.perf_counter() - started, 3),
        },
        "input_schema": champion.metadata.get("input_schema") or schema.as_dict(),
        "selected_features": model.feature_names,
        "coefficients": dict(zip(model.feature_names, [float(c) for c in model.coefficients], strict=True)),
        "standard_errors": standard_errors,
        "intercept": model.intercept,
        "intercept_se": intercept_se,
        "fit": {
            "llf": final.log_likelihood,
            "nobs": final.rows,
            "converged": final.converged,
        },
        "metrics": {"auc": auc_by_split},
        "cutoff": {"value": value, "rule": rule, "policy": cutoff},
        "golden_rows": {
            "source": f"the golden inputs of {champion.version}, scored by the recalibrated model",
            "inputs": inputs,
            "expected": [{"phat": float(p), "business_outcome": int(p > value)} for p in golden_phat],
        },
        "reference_distributions": reference_distributions(parsed_train, schema, model.phat(splits.X_train)),
    }
    extra = {"splits": splits, "train_split_model": train_split_model}
    return TrainingResult(
        model=model,
        metadata=metadata,
        summary=_summary(champion, final, len(frame)),
        seconds=time.perf_counter() - started,
        extra=extra,
    )
