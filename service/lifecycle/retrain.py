"""Gated retraining: train a challenger, judge it against the champion on the same holdout, promote or not.

1. Validate the data (read_training_csv, then retraining checks: enough rows, both classes, no column
   mostly missing). Invalid data stops here: nothing is trained, registered or promoted.
2. Train the challenger with the approved recipe (or another, by name) on the notebook's splits.
3. Holdout = the challenger's val + test split rows. Quality (AUC with a paired-bootstrap interval, log
   loss, Brier, calibration by decile) compares the champion with the challenger's *train-split* fit,
   which has not seen those rows (the registered challenger is the notebook's all-rows refit, which has).
   The flip share compares the business outcomes of the champion and of the registered challenger, i.e.
   the decisions that would change in production.
4. Gate: promote only if the challenger's AUC is at most `retrain_max_auc_drop` below the champion's, its
   log loss and Brier score at most `..._increase` above, and its flip share at most
   `retrain_max_flip_share`; and its AUC must reach `retrain_min_auc` in any case (the holdout comes from
   the new data: if its labels are broken throughout, the champion looks as bad as the challenger, and
   only an absolute floor notices). Its calibration on the holdout must hold too, whatever the
   champion's: calibration slope (y ~ a + b * logit phat) within [`retrain_calibration_min_slope`,
   `retrain_calibration_max_slope`] and calibration intercept (slope held at 1) within
   ±`retrain_calibration_max_intercept`, since phat is what the cutoff and the business read. A
   challenger whose AUC is below the floor is not judged on calibration (a model that does not rank has
   no meaningful slope; the floor already refuses it). A challenger that passes is staged for a person to
   promote (service/lifecycle/promotion.py); only the auto-promote policy (`retrain_auto_promote`, off by
   default) promotes it, keeping production's cutoff unless `retrain_promote_cutoff` says take, and never
   a challenger of a recipe other than the approved one.
5. The decision goes into the challenger's metadata (before it is published, so the artifact's checksums
   cover it), the challenger becomes `staging`. Every attempt, failures included, is appended to
   `<registry>/<name>/retraining.jsonl`, recorded in the registry's audit log and logged. A file trained
   before with the same recipe and code is not registered again: that version is the challenger again.

Production changes in one atomic alias write, as the very last step; a retrain that fails anywhere before
leaves it untouched.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.errors import DataValidationError, DuplicateVersion, PropensityError
from service.lifecycle.promotion import auto_promote
from service.model.artifact import sha256_file
from service.model.evaluation import Evaluation, evaluate_models
from service.model.lineage import fingerprint, lineage
from service.model.notebook_import import ensure_production
from service.model.registries import ModelRegistry
from service.model.registry import now_iso
from service.model.schema import InputSchema, notebook_schema
from service.model.training import RECIPES, Recipe, read_training_csv, train
from service.settings import Settings

log = logging.getLogger("propensity.retrain")
DECISIONS_FILE = "retraining.jsonl"
PROMOTED, STAGED, FAILED = "promoted", "staged", "failed"
APPROVED_RECIPE = "notebook"
ACTOR = "retraining"  # who the audit log names for what the gate did


@dataclass(frozen=True)
class Gate:
    max_auc_drop: float = 0.005
    max_log_loss_increase: float = 0.005
    max_brier_increase: float = 0.002
    max_flip_share: float = 1.0
    min_auc: float = 0.7
    calibration_min_slope: float = 0.8
    calibration_max_slope: float = 1.25
    calibration_max_intercept: float = 0.2

    @classmethod
    def from_settings(cls, settings: Settings) -> Gate:
        return cls(
            max_auc_drop=settings.retrain_max_auc_drop,
            max_log_loss_increase=settings.retrain_max_log_loss_increase,
            max_brier_increase=settings.retrain_max_brier_increase,
            max_flip_share=settings.retrain_max_flip_share,
            min_auc=settings.retrain_min_auc,
            calibration_min_slope=settings.retrain_calibration_min_slope,
            calibration_max_slope=settings.retrain_calibration_max_slope,
            calibration_max_intercept=settings.retrain_calibration_max_intercept,
        )

    def calibration_refusals(self, challenger: Evaluation) -> list[str]:
        """Why the challenger's holdout calibration is not acceptable; empty when it is (or when its AUC is
        below the floor: a model that does not rank has no meaningful slope, and the floor refuses it)."""
        fit = challenger.calibration_fit
        if fit is None or challenger.auc < self.min_auc:
            return []
        out = []
        low, high = self.calibration_min_slope, self.calibration_max_slope
        if not low <= fit.slope <= high:  # NaN fails too
            how = "extreme" if fit.slope < 1 else "timid"
            out.append(
                f"calibration slope {fit.slope:.3f} (SE {fit.slope_se:.3f}) is outside [{low}, {high}]: "
                f"its probabilities are too {how} on the holdout"
            )
        if not abs(fit.intercept) <= self.calibration_max_intercept:
            how = "under" if fit.intercept > 0 else "over"
            out.append(
                f"calibration intercept {fit.intercept:+.3f} (SE {fit.intercept_se:.3f}) is outside "
                f"±{self.calibration_max_intercept}: it {how}-predicts the observed rate on the holdout"
            )
        return out

    def refusals(self, champion: Evaluation, challenger: Evaluation, flip_share: float) -> list[str]:
        """Why the challenger may not replace the champion; empty when it may."""
        out = []
        if challenger.auc < self.min_auc:
            out.append(f"AUC {challenger.auc:.4f} is below the floor of {self.min_auc}")
        if challenger.auc < champion.auc - self.max_auc_drop:
            out.append(
                f"AUC {challenger.auc:.4f} is {champion.auc - challenger.auc:.4f} below the champion's "
                f"{champion.auc:.4f} (allowed {self.max_auc_drop})"
            )
        if challenger.log_loss > champion.log_loss + self.max_log_loss_increase:
            out.append(
                f"log loss {challenger.log_loss:.4f} exceeds the champion's {champion.log_loss:.4f} by more "
                f"than {self.max_log_loss_increase}"
            )
        if challenger.brier > champion.brier + self.max_brier_increase:
            out.append(
                f"Brier {challenger.brier:.4f} exceeds the champion's {champion.brier:.4f} by more than "
                f"{self.max_brier_increase}"
            )
        if flip_share > self.max_flip_share:
            out.append(
                f"{100 * flip_share:.1f}% of business outcomes flip "
                f"(allowed {100 * self.max_flip_share:.1f}%)"
            )
        return out + self.calibration_refusals(challenger)


def validate_for_retraining(frame: pd.DataFrame, schema: InputSchema, settings: Settings, where: str) -> None:
    """Checks beyond a readable CSV: enough rows, both classes well represented, no column mostly missing."""
    if len(frame) < settings.retrain_min_rows:
        raise DataValidationError(
            f"{where}: {len(frame)} rows; retraining needs at least {settings.retrain_min_rows} "
            "(PROPENSITY_RETRAIN_MIN_ROWS)"
        )
    minority = float(frame[schema.target].mean())
    minority = min(minority, 1 - minority)
    if minority < settings.retrain_min_class_share:
        raise DataValidationError(
            f"{where}: the minority class is {100 * minority:.2f}% of rows; at least "
            f"{100 * settings.retrain_min_class_share:.1f}% is needed"
        )
    missing = frame[list(schema.columns)].isna().mean()
    too_many = missing[missing > settings.retrain_max_missing_share]
    if not too_many.empty:
        named = ", ".join(f"{c} ({100 * v:.0f}%)" for c, v in too_many.items())
        raise DataValidationError(
            f"{where}: column(s) mostly missing: {named}; at most "
            f"{100 * settings.retrain_max_missing_share:.0f}% is allowed"
        )


@dataclass(frozen=True)
class RetrainOutcome:
    decision: str  # promoted | staged
    version: str  # the challenger (staging)
    champion: str
    record: dict[str, Any]

    @property
    def served(self) -> str | None:
        """What production names after a promotion: the challenger, or it registered again with the kept
        cutoff (service/lifecycle/promotion.py)."""
        promoted = self.record.get("promoted")
        return str(promoted["version"]) if promoted else None


def decisions_path(registry: ModelRegistry) -> Path:
    return registry.dir / DECISIONS_FILE


def append_decision(registry: ModelRegistry, record: dict[str, Any]) -> None:
    """One JSON line per attempt (O_APPEND keeps concurrent writers' lines whole); and the decision, with
    its gate report, into the registry's audit log."""
    registry.dir.mkdir(parents=True, exist_ok=True)
    try:
        registry.record(
            {
                "at": record.get("at"),
                "event": "retrain",
                "by": ACTOR,
                "version": record.get("version"),
                "decision": record.get("decision"),
                "data": record.get("data"),
                "recipe": record.get("recipe"),
                "gate": record.get("gate"),
                "error": record.get("error"),
            }
        )
    except PropensityError as exc:  # the decision file below still has it
        log.error("retrain decision not in the audit log: %s", exc.detail)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(decisions_path(registry), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_decisions(registry: ModelRegistry) -> list[dict[str, Any]]:
    path = decisions_path(registry)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _evaluation_record(evaluations: dict[str, Evaluation], differences: dict[str, Any]) -> dict[str, Any]:
    return {
        "champion": evaluations["champion"].as_dict(),
        "challenger": evaluations["challenger"].as_dict(),
        "challenger_minus_champion": differences["challenger"],
    }


def retrain(
    path: Path,
    registry: ModelRegistry,
    settings: Settings,
    recipe: Recipe | None = None,
) -> RetrainOutcome:
    """Validate, train, evaluate, gate, register (staging), promote on a pass. Raises on any failure,
    after recording it; production is untouched unless the outcome is `promoted`."""
    recipe = recipe or RECIPES["notebook"]
    schema = notebook_schema()
    started = time.perf_counter()
    record: dict[str, Any] = {
        "at": now_iso(),
        "data": {"path": str(Path(path).resolve())},
        "recipe": recipe.name,
    }
    try:
        if not Path(path).is_file():
            raise DataValidationError(f"{path}: no such file")
        record["data"]["sha256"] = sha256_file(path)
        frame = read_training_csv(path, schema)
        record["data"]["rows"] = len(frame)
        validate_for_retraining(frame, schema, settings, str(path))
        champion_version = ensure_production(registry)
        champion = registry.load(champion_version)
        record["champion"] = {"version": champion.version, "sha256": champion.sha256}
        result = train(frame, recipe, schema)
        splits = result.extra["splits"]
        X = pd.concat([splits.X_val, splits.X_test])
        y = pd.concat([splits.y_val, splits.y_test]).to_numpy(dtype=np.int64)
        champion_phat = champion.model.phat(X)
        scores = {"champion": champion_phat, "challenger": result.extra["train_split_model"].phat(X)}
        outcomes = {
            "champion": (champion_phat > champion.model.cutoff).astype(np.int64),
            "challenger": (result.model.phat(X) > result.model.cutoff).astype(np.int64),
        }
        evaluations, differences = evaluate_models(
            y, scores, outcomes, resamples=settings.retrain_bootstrap, baseline="champion"
        )
        gate = Gate.from_settings(settings)
        flip = float(differences["challenger"]["outcome_flip_share"])
        refusals = gate.refusals(evaluations["champion"], evaluations["challenger"], flip)
        held = []  # the gate passed, but policy keeps a human in the loop
        if recipe.name != APPROVED_RECIPE:
            held.append(f"recipe {recipe.name!r} is not the approved one; only a human promotes it")
        if not settings.retrain_auto_promote:
            held.append(
                "a person promotes it: `propensity registry promote` (the auto-promote policy is off)"
            )
        decision = STAGED if refusals or held else PROMOTED
        record.update(
            {
                "holdout": {
                    "rows": len(y),
                    "source": "the challenger's val + test split rows",
                    "challenger_scored_by": "its train-split fit (has not seen the holdout)",
                    "flip_share_between": "the champion and the registered (all-rows) challenger",
                },
                "evaluation": _evaluation_record(evaluations, differences),
                "gate": {**gate.__dict__, "passed": not refusals, "refusals": refusals, "held": held},
                "decision": decision,
            }
        )
        data_sha256 = record["data"]["sha256"]
        result.metadata["retraining"] = record
        result.metadata["data_sha256"] = data_sha256
        result.metadata["training"]["data_path"] = record["data"]["path"]
        result.metadata["lineage"] = lineage(path, data_sha256, len(frame), recipe.name)
        result.metadata["fingerprint"] = fingerprint(data_sha256, recipe.name)
        try:
            version = registry.publish(result.model, result.metadata, result.summary)
        except DuplicateVersion as exc:  # the same file retrained: that version is the challenger again
            version, record["reused"] = exc.version, exc.detail
        record["version"] = version
        why = f"retrained on {record['data']['path']}: {decision}"
        registry.set_alias("staging", version, by=ACTOR, reason=why, gate=record["gate"])
        if decision == PROMOTED:
            record["promoted"] = auto_promote(registry, version, settings.retrain_promote_cutoff, ACTOR)
    except Exception as exc:
        detail = exc.detail if isinstance(exc, PropensityError) else f"{type(exc).__name__}: {exc}"
        record.update(
            {"decision": FAILED, "error": detail, "seconds": round(time.perf_counter() - started, 2)}
        )
        append_decision(registry, record)
        log.error("retrain failed, production unchanged: %s", detail)
        raise
    record["seconds"] = round(time.perf_counter() - started, 2)
    append_decision(registry, record)
    diff = differences["challenger"]
    log.info(
        "retrain %s: %s (champion %s) AUC %+.4f, log loss %+.4f, Brier %+.4f, flips %.1f%%%s",
        decision,
        version,
        champion.version,
        diff["auc"],
        diff["log_loss"],
        diff["brier"],
        100 * flip,
        "; not promoted: " + "; ".join(refusals + held) if refusals or held else "",
    )
    return RetrainOutcome(decision, version, champion.version, record)
