"""Training that replicates the approved notebook, step for step, on a user's CSV.

1. train_test_split(X, y, test_size=0.1, random_state=13)             -> (train+test, val)
2. train_test_split(train+test, test_size=4000, random_state=13)     -> (train, test)   [4000 = 10% of 40,000]
3. fit the Pipeline (parse, mean-impute + scale, dummies, L1 top-25) on the train split
4. preliminary statsmodels Logit (no constant) on the train split -> AUC on train/val/test
5. final statsmodels Logit (no constant) on all rows, each split transformed with the train-split statistics
6. cutoff = 75th percentile of the final model's phat on all training rows
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from service.errors import DataValidationError, DuplicateVersion
from service.model.artifact import FittedModel, sha256_file
from service.model.features import build_pipeline
from service.model.lineage import fingerprint, lineage
from service.model.profile import reference_distributions
from service.model.registries import ModelRegistry
from service.model.schema import InputSchema, notebook_schema

RANDOM_STATE = 13
HOLDOUT_SHARE = 0.1  # val share, and the test split's share of ALL rows (4,000 of 40,000)
MIN_ROWS = 200
GOLDEN_ROWS = 8
MAX_NAMED = 5


C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # L1 strengths tried by cross-validation


@dataclass(frozen=True)
class Recipe:
    """How to train. The default is the approved notebook's recipe; the options are the study's.

    cv_folds > 0: choose the L1 strength C by cross-validation over C_GRID (log loss) before selecting.
    impute_strategy: "mean" (notebook) or "median".
    interactions: add the pairwise products of the selected features to the GLM.
    preprocess_on: "train" (notebook: imputer, scaler, dummies fit on the train split) or "all" (on all
    training rows; the L1 selection and the preliminary fit still use the train split only).
    """

    name: str = "notebook"
    k: int = 25
    C: float = 1.0
    impute_strategy: str = "mean"
    cutoff_quantile: float = 0.75
    cv_folds: int = 0
    interactions: bool = False
    preprocess_on: str = "train"

    def __post_init__(self) -> None:
        if self.impute_strategy not in ("mean", "median"):
            raise ValueError(f"impute_strategy must be mean or median, got {self.impute_strategy!r}")
        if self.preprocess_on not in ("train", "all"):
            raise ValueError(f"preprocess_on must be train or all, got {self.preprocess_on!r}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError("cv_folds must be 0 (fixed C) or at least 2")

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


RECIPES: dict[str, Recipe] = {
    "notebook": Recipe(),
    "cv-l1": Recipe(name="cv-l1", cv_folds=5),
    "median": Recipe(name="median", impute_strategy="median"),
    "interactions": Recipe(name="interactions", interactions=True),
    "all-rows": Recipe(name="all-rows", preprocess_on="all"),
}


def recipe_named(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"no recipe {name!r}; known: {', '.join(RECIPES)}") from None


@dataclass
class Splits:
    X_train: pd.DataFrame
    X_val: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_val: pd.Series
    y_test: pd.Series

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}


@dataclass
class TrainingResult:
    model: FittedModel
    metadata: dict[str, Any]
    summary: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _rows(index: pd.Index, positions: np.ndarray) -> str:
    shown = [str(index[i]) for i in positions[:MAX_NAMED]]
    more = f" (+{len(positions) - MAX_NAMED} more)" if len(positions) > MAX_NAMED else ""
    return ", ".join(shown) + more


def read_training_csv(path: Path, schema: InputSchema, *, require_target: bool = True) -> pd.DataFrame:
    """Read and validate a training CSV. Raises DataValidationError naming the column and first bad rows."""
    try:
        frame = pd.read_csv(path, low_memory=False)
    except FileNotFoundError:
        raise DataValidationError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path}: not a readable CSV ({str(exc)[:200]})") from None
    frame.index = pd.RangeIndex(len(frame), name="row")
    wanted = list(schema.columns) + ([schema.target] if require_target else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataValidationError(f"{path}: missing column(s) {', '.join(missing)}")
    if len(frame) < MIN_ROWS:
        raise DataValidationError(f"{path}: {len(frame)} rows; at least {MIN_ROWS} are needed to train")
    if require_target:
        y = pd.to_numeric(frame[schema.target], errors="coerce")
        bad = np.flatnonzero(~y.isin([0, 1]).to_numpy())
        if bad.size:
            raise DataValidationError(
                f"{path}: column {schema.target} must be 0 or 1; {bad.size} row(s) are not, "
                f"first rows: {_rows(frame.index, bad)} "
                f"(values {frame[schema.target].iloc[bad[:3]].tolist()})"
            )
        if y.nunique() < 2:
            raise DataValidationError(f"{path}: column {schema.target} has a single class; need both 0 and 1")
        frame[schema.target] = y.astype(np.int64)
    for column in schema.columns:
        if frame[column].isna().all():
            raise DataValidationError(f"{path}: column {column} has no values")
    return frame


def split_like_notebook(frame: pd.DataFrame, target: str) -> Splits:
    X = frame.drop(columns=[target])
    y = frame[target]
    holdout = math.ceil(len(frame) * HOLDOUT_SHARE)  # sklearn's own rounding of test_size=0.1
    X_rest, X_val, y_rest, y_val = train_test_split(X, y, test_size=HOLDOUT_SHARE, random_state=RANDOM_STATE)
    X_train, X_test, y_train, y_test = train_test_split(
        X_rest, y_rest, test_size=holdout, random_state=RANDOM_STATE
    )
    return Splits(X_train, X_val, X_test, y_train, y_val, y_test)


def _logit(y: pd.Series, X: pd.DataFrame) -> Any:
    return sm.Logit(y.to_numpy(dtype=np.float64), X).fit(disp=0, maxiter=100)


def train(
    frame: pd.DataFrame, recipe: Recipe | None = None, schema: InputSchema | None = None
) -> TrainingResult:
    recipe = recipe or Recipe()
    schema = schema or notebook_schema()
    started = time.perf_counter()
    # Validate every value once, up front, so errors name the CSV row, not a split position.
    parser = build_pipeline(schema).named_steps["parse"].fit(frame[list(schema.columns)])
    parsed_all = parser.transform(frame[list(schema.columns)])

    splits = split_like_notebook(frame, schema.target)
    pipeline = build_pipeline(
        schema,
        k=recipe.k,
        C=recipe.C,
        impute_strategy=recipe.impute_strategy,
        Cs=C_GRID if recipe.cv_folds else None,
        cv=recipe.cv_folds or 5,
        interactions=recipe.interactions,
    )
    if recipe.preprocess_on == "all":
        head, tail = pipeline[:2], pipeline[2:]  # (parse, prepare) on every row; the rest on train
        head.fit(frame.drop(columns=[schema.target]))
        tail.fit(head.transform(splits.X_train), splits.y_train)
    else:
        pipeline.fit(splits.X_train, splits.y_train)
    features = [str(f) for f in pipeline.get_feature_names_out()]

    Z = {name: pipeline.transform(getattr(splits, f"X_{name}")) for name in ("train", "val", "test")}
    Y = {name: getattr(splits, f"y_{name}") for name in ("train", "val", "test")}
    preliminary = _logit(Y["train"], Z["train"])
    auc = {name: float(roc_auc_score(Y[name], preliminary.predict(Z[name]))) for name in Z}

    Z_all = pd.concat([Z["train"], Z["val"], Z["test"]])
    y_all = pd.concat([Y["train"], Y["val"], Y["test"]])
    final = _logit(y_all, Z_all)
    coefficients = final.params.reindex(features).to_numpy(dtype=np.float64)
    phat_all = np.asarray(final.predict(Z_all), dtype=np.float64)
    cutoff = float(np.quantile(phat_all, recipe.cutoff_quantile))
    auc["all_final"] = float(roc_auc_score(y_all, phat_all))
    model = FittedModel(pipeline=pipeline, coefficients=coefficients, cutoff=cutoff)
    phat_train = np.asarray(preliminary.predict(Z["train"]), dtype=np.float64)
    train_split_model = FittedModel(
        pipeline=pipeline,
        coefficients=preliminary.params.reindex(features).to_numpy(dtype=np.float64),
        cutoff=float(np.quantile(phat_train, recipe.cutoff_quantile)),
    )

    golden_raw = splits.X_val.head(GOLDEN_ROWS)
    golden_phat = model.phat(golden_raw)
    parsed_train = parsed_all.loc[splits.X_train.index]
    selector = pipeline.named_steps["select"]
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "training": {
            "source": "csv",
            "recipe": recipe.name,
            "options": recipe.options(),
            "chosen_C": float(selector.C_),
            "features_kept": len(features),
            "rows": len(frame),
            "splits": splits.sizes,
            "random_state": RANDOM_STATE,
            "class_balance": {
                str(k): int(v) for k, v in frame[schema.target].value_counts().sort_index().items()
            },
            "l1_coefficients": dict(
                zip(
                    [str(f) for f in pipeline.named_steps["prepare"].get_feature_names_out()],
                    [float(c) for c in selector.l1_coef_],
                    strict=True,
                )
            )
            if selector.l1_coef_ is not None
            else None,
            "seconds": round(seconds, 3),
        },
        "input_schema": schema.as_dict(),
        "selected_features": features,
        "coefficients": {f: float(final.params[f]) for f in features},
        "standard_errors": {f: float(final.bse[f]) for f in features},
        "fit": {
            "llf": float(final.llf),
            "llnull": float(final.llnull),
            "pseudo_r2": float(final.prsquared),
            "nobs": int(final.nobs),
            "converged": bool(final.mle_retvals.get("converged", True)),
        },
        "metrics": {"auc": auc},
        "cutoff": {
            "value": cutoff,
            "rule": f"quantile {recipe.cutoff_quantile} of the final model's phat on all {len(frame)} "
            "training rows",
        },
        "golden_rows": {
            "source": "first validation-split rows of the training CSV",
            "inputs": [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                for row in golden_raw.to_dict(orient="records")
            ],
            "expected": [{"phat": float(p), "business_outcome": int(p > cutoff)} for p in golden_phat],
        },
        "reference_distributions": reference_distributions(parsed_train, schema, model.phat(splits.X_train)),
    }
    summary = str(final.summary2()) if hasattr(final, "summary2") else str(final.summary())
    # For evaluation: the train-split fit has not seen the val/test rows (the final model has, by recipe).
    extra = {"splits": splits, "train_split_model": train_split_model}
    return TrainingResult(model=model, metadata=metadata, summary=summary, seconds=seconds, extra=extra)


def train_csv(
    path: Path, registry: ModelRegistry, recipe: Recipe | None = None
) -> tuple[str, TrainingResult]:
    """Validate, train and publish a new version (not promoted). Nothing is written on failure."""
    schema = notebook_schema()
    frame = read_training_csv(path, schema)
    result = train(frame, recipe, schema)
    data_sha256 = sha256_file(path)
    name = (recipe or RECIPES["notebook"]).name
    result.metadata["data_sha256"] = data_sha256
    result.metadata["training"]["data_path"] = str(Path(path).resolve())
    result.metadata["lineage"] = lineage(path, data_sha256, len(frame), name)
    result.metadata["fingerprint"] = fingerprint(data_sha256, name)
    try:
        version = registry.publish(result.model, result.metadata, result.summary)
    except DuplicateVersion as exc:  # trained before on these bytes, this recipe, this code
        result.extra["reused"] = exc.detail
        return exc.version, result
    return version, result
