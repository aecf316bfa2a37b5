"""Retraining on logged production rows: a full refit and a recalibrated champion, through the same gate.

1. The rows: labelled rows of the prediction log (service/monitoring/prediction_store.py
   `labelled_frame`), turned into the frame the recipe trains on (`training_frame`): the model's raw input
   columns as the clients sent them, plus the label as the schema's target. A column the log did not
   store (absent, or missing in every row) is left out of the full refit (its schema is the columns
   present) and is imputed by the champion's own pipeline in the recalibration; both are reported.
   Then the checks of service/lifecycle/retrain.py (enough rows, both classes, no column mostly missing).
2. Two challengers on the notebook's splits of those rows: the full refit (the notebook recipe, or
   another by name) and the recalibrated champion (service/model/recalibration.py). Both are judged on
   the same holdout (the val + test rows, scored by each one's train-split fit), with one paired
   bootstrap for the champion and both, and by the same Gate, calibration included.
3. What passes is registered; what is refused is not (its report is in the decisions log). Of the passing
   ones, the lower holdout log loss wins: it becomes `staging`, and `production` when the policy of
   service/lifecycle/retrain.py allows (the approved recipe or a recalibration of the champion, and
   `retrain_auto_promote`). A passing runner-up is registered without an alias.
4. The cutoff each challenger carries is explicit: the refit's is its recipe's rule (recomputed); the
   recalibrated champion's is the champion's approved cutoff (KEEP, the default) or the recipe's rule
   applied to its own phat (RECOMPUTE).

Every challenger's attempt is one line of the decisions log; production changes in one alias write, last.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from service.errors import DataValidationError, PropensityError
from service.lifecycle.promotion import auto_promote
from service.lifecycle.retrain import (
    ACTOR,
    APPROVED_RECIPE,
    FAILED,
    PROMOTED,
    STAGED,
    Gate,
    append_decision,
    validate_for_retraining,
)
from service.model.artifact import LoadedArtifact
from service.model.evaluation import evaluate_models
from service.model.notebook_import import ensure_production
from service.model.parsing import is_missing
from service.model.recalibration import KEEP, recalibrate
from service.model.registries import ModelRegistry
from service.model.registry import now_iso
from service.model.schema import InputSchema, notebook_schema
from service.model.training import RECIPES, Recipe, TrainingResult, train
from service.settings import Settings

log = logging.getLogger("propensity.retrain")
REFIT, RECALIBRATED = "refit", "recalibrated"
REGISTERED, REFUSED = "registered", "refused"  # passed but another challenger won / not registered
LOG_COLUMNS = ("y", "scored_at", "version")  # what labelled_frame adds to the model's raw columns


@dataclass(frozen=True)
class TrainingFrame:
    frame: pd.DataFrame  # the raw input columns present + the target
    schema: InputSchema  # the notebook schema restricted to the columns present
    present: tuple[str, ...]
    absent: tuple[str, ...]  # not stored by the log, or missing in every row


def _restricted(schema: InputSchema, present: Sequence[str]) -> InputSchema:
    keep = set(present)
    return InputSchema(
        columns=tuple(c for c in schema.columns if c in keep),
        target=schema.target,
        numeric=tuple(c for c in schema.numeric if c in keep),
        formats={c: f for c, f in schema.formats.items() if c in keep},
        categories={c: v for c, v in schema.categories.items() if c in keep},
    )


def training_frame(logged: pd.DataFrame, schema: InputSchema) -> TrainingFrame:
    """The recipe's training frame from labelled log rows (raw columns as sent + `y`).

    Missing spellings ("", "NaN", ...) become None; the label must be 0 or 1. Columns of the schema that
    the log lacks, or that are missing in every row, are absent: left out of the returned schema."""
    if "y" not in logged.columns:
        raise DataValidationError("the prediction log's labelled rows have no label column y")
    label = pd.to_numeric(logged["y"], errors="coerce")
    if not label.isin([0, 1]).all():
        raise DataValidationError("the prediction log's labels must be 0 or 1")
    columns: dict[str, Any] = {}
    absent = []
    for column in schema.columns:
        if column not in logged.columns:
            absent.append(column)
            continue
        values = [None if is_missing(v) else v for v in logged[column].tolist()]
        if all(v is None for v in values):
            absent.append(column)
            continue
        columns[column] = pd.Series(values, dtype=object)
    frame = pd.DataFrame(columns)
    frame[schema.target] = label.to_numpy(dtype=np.int64)
    frame.index = pd.RangeIndex(len(frame), name="row")
    present = tuple(c for c in schema.columns if c in columns)
    return TrainingFrame(frame, _restricted(schema, present), present, tuple(absent))


def frame_sha256(frame: pd.DataFrame) -> str:
    """A digest of the rows' content (for the decisions log: the same rows give the same digest)."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()


def redact_url(url: str) -> str:
    """A database URL without its password (it goes into logs and metadata)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


@dataclass(frozen=True)
class ChallengerOutcome:
    kind: str  # refit | recalibrated
    decision: str  # promoted | staged | registered | refused
    version: str | None  # None when refused (not registered)
    record: dict[str, Any]


@dataclass(frozen=True)
class ComparisonOutcome:
    champion: str
    holdout_rows: int
    trained_on: tuple[str, ...]
    absent: tuple[str, ...]
    champion_evaluation: dict[str, Any]
    challengers: list[ChallengerOutcome] = field(default_factory=list)

    @property
    def promoted(self) -> ChallengerOutcome | None:
        return next((c for c in self.challengers if c.decision == PROMOTED), None)


def _held(kind: str, recipe: Recipe, settings: Settings) -> list[str]:
    held = []
    if kind == REFIT and recipe.name != APPROVED_RECIPE:
        held.append(f"recipe {recipe.name!r} is not the approved one; only a human promotes it")
    if not settings.retrain_auto_promote:
        held.append("automatic promotion is off (PROPENSITY_RETRAIN_AUTO_PROMOTE=false)")
    return held


def _cutoff_record(kind: str, result: TrainingResult) -> dict[str, Any]:
    cutoff = result.metadata["cutoff"]
    policy = cutoff.get("policy") or ("recompute" if kind == REFIT else KEEP)
    rule = cutoff["rule"] if kind != REFIT else f"recomputed by its recipe: {cutoff['rule']}"
    return {"value": float(result.model.cutoff), "policy": policy, "rule": rule}


def _decisions(
    refusals: dict[str, list[str]], held: dict[str, list[str]], log_loss: dict[str, float]
) -> dict[str, str]:
    passing = [k for k in refusals if not refusals[k]]
    winner = min(passing, key=lambda k: log_loss[k]) if passing else None
    out = {}
    for kind in refusals:
        if refusals[kind]:
            out[kind] = REFUSED
        elif kind != winner:
            out[kind] = REGISTERED
        else:
            out[kind] = STAGED if held[kind] else PROMOTED
    return out


def _challengers(
    tf: TrainingFrame, champion: LoadedArtifact, recipe: Recipe, cutoff: str
) -> dict[str, TrainingResult]:
    refit = train(tf.frame, recipe, tf.schema)
    recalibrated = recalibrate(
        champion, tf.frame, notebook_schema(), cutoff=cutoff, cutoff_quantile=recipe.cutoff_quantile
    )
    return {REFIT: refit, RECALIBRATED: recalibrated}


def compare_and_register(
    tf: TrainingFrame,
    registry: ModelRegistry,
    settings: Settings,
    *,
    data: dict[str, Any],
    recipe: Recipe | None = None,
    cutoff: str = KEEP,
) -> ComparisonOutcome:
    """Steps 2-4 of the module docstring on a training frame; raises (after logging the failure in the
    decisions log) on any error, production untouched."""
    recipe = recipe or RECIPES[APPROVED_RECIPE]
    started = time.perf_counter()
    base: dict[str, Any] = {
        "at": now_iso(),
        "data": {**data, "rows": len(tf.frame), "trained_on": list(tf.present), "absent": list(tf.absent)},
    }
    try:
        validate_for_retraining(tf.frame, tf.schema, settings, str(data.get("source", "rows")))
        champion = registry.load(ensure_production(registry))
        base["champion"] = {"version": champion.version, "sha256": champion.sha256}
        results = _challengers(tf, champion, recipe, cutoff)
        outcome = _judge(tf, registry, settings, base, champion, results, recipe)
    except Exception as exc:
        detail = exc.detail if isinstance(exc, PropensityError) else f"{type(exc).__name__}: {exc}"
        seconds = round(time.perf_counter() - started, 2)
        append_decision(registry, {**base, "decision": FAILED, "error": detail, "seconds": seconds})
        log.error("retrain from the prediction log failed, production unchanged: %s", detail)
        raise
    return outcome


def _judge(
    tf: TrainingFrame,
    registry: ModelRegistry,
    settings: Settings,
    base: dict[str, Any],
    champion: LoadedArtifact,
    results: dict[str, TrainingResult],
    recipe: Recipe,
) -> ComparisonOutcome:
    splits = results[REFIT].extra["splits"]
    X = pd.concat([splits.X_val, splits.X_test])
    y = pd.concat([splits.y_val, splits.y_test]).to_numpy(dtype=np.int64)
    champion_phat = champion.model.phat(X)
    scores = {"champion": champion_phat}
    outcomes = {"champion": (champion_phat > champion.model.cutoff).astype(np.int64)}
    for kind, result in results.items():
        scores[kind] = result.extra["train_split_model"].phat(X)
        outcomes[kind] = (result.model.phat(X) > result.model.cutoff).astype(np.int64)
    evaluations, differences = evaluate_models(
        y, scores, outcomes, resamples=settings.retrain_bootstrap, baseline="champion"
    )
    gate = Gate.from_settings(settings)
    refusals = {
        kind: gate.refusals(
            evaluations["champion"], evaluations[kind], float(differences[kind]["outcome_flip_share"])
        )
        for kind in results
    }
    held = {kind: _held(kind, recipe, settings) for kind in results}
    decisions = _decisions(refusals, held, {k: evaluations[k].log_loss for k in results})
    holdout = {
        "rows": len(y),
        "source": "the val + test split rows of the logged rows",
        "challenger_scored_by": "its train-split fit (has not seen the holdout)",
        "flip_share_between": "the champion and the registered (all-rows) challenger",
    }
    records = {}
    for kind, result in results.items():
        records[kind] = {
            **base,
            "recipe": recipe.name if kind == REFIT else "recalibrated",
            "challenger": kind,
            "holdout": holdout,
            "evaluation": {
                "champion": evaluations["champion"].as_dict(),
                "challenger": evaluations[kind].as_dict(),
                "challenger_minus_champion": differences[kind],
            },
            "gate": {
                **gate.__dict__,
                "passed": not refusals[kind],
                "refusals": refusals[kind],
                "held": held[kind],
            },
            "cutoff": _cutoff_record(kind, result),
            "decision": decisions[kind],
        }
    outcome = ComparisonOutcome(
        champion=champion.version,
        holdout_rows=len(y),
        trained_on=tf.present,
        absent=tf.absent,
        champion_evaluation=evaluations["champion"].as_dict(),
    )
    _register(registry, results, records, decisions, outcome, settings)
    return outcome


def _register(
    registry: ModelRegistry,
    results: dict[str, TrainingResult],
    records: dict[str, dict[str, Any]],
    decisions: dict[str, str],
    outcome: ComparisonOutcome,
    settings: Settings,
) -> None:
    """Publish what passed (the winner last, so staging and production move after every write), then
    append each challenger's record to the decisions log."""
    order = sorted(results, key=lambda k: decisions[k] in (PROMOTED, STAGED))
    for kind in order:
        record, result = records[kind], results[kind]
        version = None
        if decisions[kind] != REFUSED:
            result.metadata["retraining"] = record
            result.metadata["data_sha256"] = record["data"].get("sha256")
            version = registry.publish(result.model, result.metadata, result.summary)
            record["version"] = version
            if decisions[kind] in (PROMOTED, STAGED):
                why = f"retrained on the prediction log ({kind}): {decisions[kind]}"
                registry.set_alias("staging", version, by=ACTOR, reason=why)
            if decisions[kind] == PROMOTED:
                record["promoted"] = auto_promote(registry, version, settings.retrain_promote_cutoff, ACTOR)
        outcome.challengers.append(ChallengerOutcome(kind, decisions[kind], version, record))
    for kind in results:  # in the report's order: refit, then recalibrated
        append_decision(registry, records[kind])
    outcome.challengers.sort(key=lambda c: list(results).index(c.kind))
    log.info(
        "retrain from the prediction log (champion %s): %s",
        outcome.champion,
        "; ".join(
            f"{c.kind} {c.decision}" + (f" as {c.version}" if c.version else "") for c in outcome.challengers
        ),
    )


def load_logged_rows(settings: Settings, since: float, schema: InputSchema | None = None) -> pd.DataFrame:
    """Labelled rows scored since `since` (epoch seconds) from the prediction log."""
    from service.monitoring.prediction_store import PredictionStore

    schema = schema or notebook_schema()
    store = PredictionStore.open(settings.prediction_log_database)
    try:
        frame: pd.DataFrame = store.labelled_frame(since, list(schema.columns))
    finally:
        store.close()
    return frame


def retrain_from_log(
    registry: ModelRegistry,
    settings: Settings,
    since: float,
    *,
    recipe: Recipe | None = None,
    cutoff: str = KEEP,
) -> ComparisonOutcome:
    """Both challengers on the log's labelled rows scored since `since` (epoch seconds)."""
    logged = load_logged_rows(settings, since)
    tf = training_frame(logged, notebook_schema())
    data = {
        "source": "prediction log",
        "database": redact_url(settings.prediction_log_database),
        "since": pd.Timestamp(since, unit="s", tz="UTC").isoformat(),
        "sha256": frame_sha256(tf.frame),
    }
    return compare_and_register(tf, registry, settings, data=data, recipe=recipe, cutoff=cutoff)
