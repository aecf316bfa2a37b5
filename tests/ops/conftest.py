"""Fixtures for drift: the approved model compiled, replica rows with and without a planted shift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.api.scoring import CompiledModel
from service.model.registry import Registry
from service.model.replica import make_replica_frame

SHIFTED = ("x91", "x31", "x12")
NEW_LEVEL = "europe"


def plant_shift(frame: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """The issue's planted shift: x91 mean +0.1 (a third of its std), a new x31 level in 15% of rows,
    and x12 missing in 30% of rows. Every other column is left as drawn."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["x91"] = out["x91"] + 0.1
    out.loc[rng.random(len(out)) < 0.15, "x31"] = NEW_LEVEL
    out.loc[rng.random(len(out)) < 0.30, "x12"] = np.nan
    return out


@pytest.fixture(scope="session")
def approved_compiled(approved_registry: Registry) -> CompiledModel:
    return CompiledModel.from_artifact(approved_registry.load("production"))


@pytest.fixture(scope="session")
def fresh_rows() -> pd.DataFrame:
    """Unshifted replica rows (a different seed than the reference's 26)."""
    return make_replica_frame(10_000, 7, target=False)


@pytest.fixture(scope="session")
def shifted_rows(fresh_rows: pd.DataFrame) -> pd.DataFrame:
    return plant_shift(fresh_rows)


@pytest.fixture(scope="session")
def shifted_csv(shifted_rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drift") / "shifted.csv"
    shifted_rows.to_csv(path, index=False)
    return path
