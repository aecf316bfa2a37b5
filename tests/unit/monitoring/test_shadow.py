"""Shadow scoring: the comparison of two models on a batch, the observer's O(1) hand-over and its skips, and
the thread's counts in the metrics, against a row-by-row comparison written out here."""

from __future__ import annotations

import dataclasses
import sys
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.model.registry import Registry
from service.model.scorer_spec import NumericSpec, ScorerSpec
from service.monitoring.shadow import SWITCH_SECONDS, ShadowScorer, compare, merged
from service.serving.batch import ColumnBatch, JsonBatch
from service.serving.holder import ChallengerHolder
from service.serving.metrics import SHADOW_DIFF_BUCKETS, Metrics
from service.serving.observe import Scoring
from service.serving.reasons import contributions
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tools.bench.cluster_bench import make_rows


@pytest.fixture(scope="module")
def served(approved_registry: Registry) -> CompiledModel:
    return CompiledModel.from_artifact(approved_registry.load_serving("production"))


def challenger_of(served: CompiledModel, spec: ScorerSpec, version: str = "v2") -> CompiledModel:
    """The approved model changed the way a retrained one is: other coefficients, another cutoff, and a
    numeric input it reads that the served one ignores (x0, so a bad x0 is refused by it alone)."""
    extra = NumericSpec(name="x0", fmt="number", fill=0.0, mean=0.0, scale=10.0)
    changed = dataclasses.replace(
        spec,
        features=(*spec.features, "x0"),
        coefficients=(*(c * 1.07 for c in spec.coefficients), 0.03),
        cutoff=0.69,
        numeric=(*spec.numeric, extra),
    )
    return CompiledModel(changed, version=version, sha256="0" * 64, known_columns=served.known_columns)


@pytest.fixture(scope="module")
def challenger(served: CompiledModel, approved_registry: Registry) -> CompiledModel:
    return challenger_of(served, approved_registry.load_serving("production").spec)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    out = make_rows(3_000, seed=15)
    out[10]["x0"] = "not a number"  # the challenger refuses it, the served model does not read it
    out[20]["x12"] = "not a number"  # both refuse it: not compared at all
    return out


def by_hand(served: CompiledModel, challenger: CompiledModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The offline comparison, one row at a time, from each model's own answers and contributions."""
    counts = {"same": 0, "flip_up": 0, "flip_down": 0, "refused": 0}
    differences, shifts = [], dict.fromkeys([*served.features, *challenger.features], 0.0)
    for row in rows:
        a, b = served.score([row]), challenger.score([row])
        if a.bad_rows:
            continue
        if b.bad_rows:
            counts["refused"] += 1
            continue
        oa, ob = a.outcome[0], b.outcome[0]
        counts["same" if oa == ob else "flip_up" if ob else "flip_down"] += 1
        differences.append(b.phat[0] - a.phat[0])
        ta = dict(zip(served.features, contributions(served, a)[0], strict=True))
        tb = dict(zip(challenger.features, contributions(challenger, b)[0], strict=True))
        for feature in shifts:
            shifts[feature] += abs(tb.get(feature, 0.0) - ta.get(feature, 0.0))
    return {"counts": counts, "differences": differences, "shifts": shifts}


def test_compare_is_the_row_by_row_comparison(
    served: CompiledModel, challenger: CompiledModel, rows: list[dict[str, Any]]
) -> None:
    batch = JsonBatch(rows)
    agreement = compare(served, served.score_batch(batch), challenger, challenger.score_batch(batch))
    expected = by_hand(served, challenger, rows)
    assert agreement.counts == expected["counts"]
    assert agreement.counts["refused"] == 1 and agreement.compared == len(rows) - 2
    assert agreement.counts["flip_up"] + agreement.counts["flip_down"] > 0  # the check can fail
    assert agreement.differences.tolist() == expected["differences"]  # the same bits, row by row
    assert set(agreement.shifts) == set(expected["shifts"])
    for feature, total in expected["shifts"].items():
        assert agreement.shifts[feature] == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert agreement.shifts["x0"] > 0


def test_a_model_compared_with_itself_agrees_everywhere(
    served: CompiledModel, rows: list[dict[str, Any]]
) -> None:
    scored = served.score_batch(JsonBatch(rows))
    agreement = compare(served, scored, served, scored)
    assert agreement.counts["same"] == agreement.compared == len(rows) - 1
    assert not agreement.differences.any() and not any(agreement.shifts.values())


class FixedHolder:
    """A shadow holder stand-in for the observer's own logic: `current` is what the test sets."""

    def __init__(self, current: CompiledModel | None) -> None:
        self.current = current

    def start(self) -> None: ...

    def stop(self) -> None: ...


def scorer(
    metrics: Metrics,
    holder: Any,
    share: float = 1.0,
    max_pending: int = 100_000,
    draws: list[float] | None = None,
) -> ShadowScorer:
    settings = Settings(shadow_share=share, shadow_max_pending_rows=max_pending)
    sample = iter(draws or []).__next__
    return ShadowScorer(settings, metrics, holder, sample=sample)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_the_switch_interval_is_short_while_the_thread_runs_and_given_back(
    challenger: CompiledModel,
) -> None:
    before = sys.getswitchinterval()
    shadow = scorer(Metrics(CollectorRegistry()), FixedHolder(challenger))
    shadow.start()
    during = sys.getswitchinterval()
    shadow.stop()
    assert during == pytest.approx(SWITCH_SECONDS)
    assert during < before
    assert sys.getswitchinterval() == before


def test_the_thread_counts_what_compare_finds(
    served: CompiledModel, challenger: CompiledModel, rows: list[dict[str, Any]]
) -> None:
    metrics = Metrics(CollectorRegistry())
    shadow = scorer(metrics, FixedHolder(challenger))
    shadow.start()
    for start in range(0, len(rows), 500):  # six calls
        batch = JsonBatch(rows[start : start + 500])
        shadow.on_scored(Scoring(served, batch, served.score_batch(batch)))
    shadow.stop()
    assert shadow.pending_rows == 0
    expected = by_hand(served, challenger, rows)
    pair = {"served": "v1", "shadow": "v2"}
    for result, count in expected["counts"].items():
        assert value(metrics, "propensity_shadow_rows_total", **pair, result=result) == count
    cumulative = 0
    for bound in SHADOW_DIFF_BUCKETS:
        cumulative = sum(1 for d in expected["differences"] if d <= bound)
        le = str(bound)
        assert value(metrics, "propensity_shadow_phat_difference_bucket", **pair, le=le) == cumulative
    assert value(metrics, "propensity_shadow_phat_difference_count", **pair) == len(expected["differences"])
    for feature, total in expected["shifts"].items():
        got = value(metrics, "propensity_shadow_contribution_shift_total", **pair, feature=feature)
        assert got == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert value(metrics, "propensity_shadow_seconds_total") > 0


def test_the_loop_only_queues_and_says_why_it_skips(
    served: CompiledModel, challenger: CompiledModel, rows: list[dict[str, Any]]
) -> None:
    """No model, the same version, sampled out, over the pending cap: skipped and counted; nothing is
    scored on the loop (the thread is not started here: everything queued stays queued)."""
    metrics = Metrics(CollectorRegistry())
    holder = FixedHolder(None)
    shadow = scorer(metrics, holder, share=0.5, max_pending=150, draws=[0.7, 0.2, 0.1, 0.3])
    batch = JsonBatch(rows[:100])
    event = Scoring(served, batch, served.score_batch(batch))
    shadow.on_scored(event)  # no shadow model loaded
    holder.current = served
    shadow.on_scored(event)  # the same version as the served one
    holder.current = challenger
    shadow.on_scored(event)  # draw 0.7 >= 0.5: sampled out
    shadow.on_scored(event)  # draw 0.2: queued (100 rows pending)
    shadow.on_scored(event)  # draw 0.1: 200 > 150 pending: dropped
    metrics.buffer.flush()
    for reason in ("no_model", "same_version", "sampled_out", "dropped"):
        assert value(metrics, "propensity_shadow_skipped_rows_total", reason=reason) == 100, reason
    assert shadow.pending_rows == 100
    assert value(metrics, "propensity_shadow_rows_total", served="v1", shadow="v2", result="same") == 0


def test_a_failing_batch_does_not_stop_the_thread(
    served: CompiledModel,
    challenger: CompiledModel,
    rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics(CollectorRegistry())
    shadow = scorer(metrics, FixedHolder(challenger))
    calls = {"n": 0}
    real = shadow.process

    def flaky(items: list[Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in a comparison")
        real(items)

    monkeypatch.setattr(shadow, "process", flaky)
    for _ in range(3):  # queued before the thread starts: the first two merge (20 rows), the third not
        batch = JsonBatch(rows[:10])
        shadow.on_scored(Scoring(served, batch, served.score_batch(batch)))
    shadow.start()
    shadow.stop()
    assert calls["n"] == 2 and shadow.pending_rows == 0
    compared = sum(
        value(metrics, "propensity_shadow_rows_total", served="v1", shadow="v2", result=r)
        for r in ("same", "flip_up", "flip_down")
    )
    assert compared == 10  # the third call's rows


def test_the_shadow_holder_follows_staging_and_lets_go_when_it_is_deleted(
    approved_registry: Registry, tmp_path: Any
) -> None:
    import shutil

    root = tmp_path / "registry"
    shutil.copytree(approved_registry.root, root)
    registry = Registry(root, "propensity")
    metrics = Metrics(CollectorRegistry())
    holder = ChallengerHolder(
        Settings(artifacts_dir=tmp_path),
        metrics,
        registry,
        alias="staging",
        info=metrics.shadow_model_info,
        role="shadow-scoring with",
    )
    holder.refresh()
    assert holder.current is None  # no staging alias yet: nothing to shadow, and not an error
    registry.set_alias("staging", "v1")
    holder.refresh()
    assert holder.current is not None and holder.current.version == "v1"
    assert value(metrics, "propensity_shadow_model_info", model="propensity", version="v1") == 1
    assert value(metrics, "propensity_model_ready") == 0  # the served model's gauges are not its
    registry.delete_alias("staging", reason="done")
    holder.refresh()
    assert holder.current is None
    assert value(metrics, "propensity_shadow_model_info", model="propensity", version="v1") == 0
    assert threading.active_count() >= 1


def test_merged_results_are_the_merged_batchs(served: CompiledModel, rows: list[dict[str, Any]]) -> None:
    """The thread scores queued single rows as one batch: the served side's results, merged, are what
    scoring the merged batch gives (the array path and the row path give the same bits)."""
    parts = [rows[i : i + n] for i, n in ((0, 1), (1, 3), (4, 1), (5, 20))] + [rows[8:30]]
    whole = served.score_batch(JsonBatch([row for part in parts for row in part]))
    joined = merged([served.score_batch(JsonBatch(part)) for part in parts])
    assert joined.phat == whole.phat and joined.outcome == whole.outcome
    assert joined.bad_rows == whole.bad_rows and joined.columns == whole.columns


def test_a_big_body_that_lacks_the_challengers_columns_is_skipped(
    served: CompiledModel, challenger: CompiledModel, rows: list[dict[str, Any]]
) -> None:
    """A ColumnBatch holds only the served model's columns: the challenger's x0 was never read."""
    metrics = Metrics(CollectorRegistry())
    shadow = scorer(metrics, FixedHolder(challenger))
    batch = ColumnBatch(
        [SimpleNamespace(**{c: row.get(c) for c in served.used_columns}) for row in rows[:30]]
    )
    shadow.on_scored(Scoring(served, batch, served.score_batch(JsonBatch(rows[:30]))))
    metrics.buffer.flush()
    assert value(metrics, "propensity_shadow_skipped_rows_total", reason="columns_unread") == 30
    assert shadow.pending_rows == 0


class ListLog:
    """The prediction log's take_shadow, kept in a list (the writer itself: test_prediction_log.py)."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []

    def take_shadow(self, rows: list[tuple[object, ...]]) -> None:
        self.rows.extend(rows)


def test_every_compared_row_goes_to_the_log_with_both_results(
    served: CompiledModel, challenger: CompiledModel, rows: list[dict[str, Any]]
) -> None:
    """Calls of one row (merged by the thread) and of many: each logged row keyed by its own call's
    request id and index, with each model's phat bits and outcome; a refused row's shadow result None,
    a row the served model refused not logged."""
    log = ListLog()
    holder: Any = FixedHolder(challenger)
    shadow = ShadowScorer(Settings(shadow_share=1.0), Metrics(CollectorRegistry()), holder, log=log)
    calls = [rows[i : i + 1] for i in range(8)] + [rows[8:40]]
    for n, call in enumerate(calls):  # queued first: the eight one-row calls are merged
        batch = JsonBatch(call)
        shadow.on_scored(Scoring(served, batch, served.score_batch(batch), f"req-{n}", 100.0 + n))
    shadow.start()
    shadow.stop()
    expected = []
    for n, call in enumerate(calls):
        for i, row in enumerate(call):
            a, b = served.score([row]), challenger.score([row])
            if a.bad_rows:
                continue
            refused = bool(b.bad_rows)
            expected.append(
                (
                    f"req-{n}",
                    i,
                    100.0 + n,
                    "v1",
                    a.phat[0],
                    a.outcome[0],
                    "v2",
                    None if refused else b.phat[0],
                    None if refused else b.outcome[0],
                )
            )
    assert log.rows == expected
    assert sum(r[7] is None for r in log.rows) == 1  # rows[10]: its x0 the challenger cannot read
    assert len(log.rows) == 39  # rows[20]: refused by both, not compared
