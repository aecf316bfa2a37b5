"""The chaos suite's table: one row per scenario (requests, failed, p99 during the fault), printed at the
end of the run by conftest.py and written to $CHAOS_REPORT when set."""

from __future__ import annotations

from dataclasses import dataclass

from tools.loadgen import LoadResult


@dataclass(frozen=True)
class ChaosRow:
    scenario: str
    requests: int
    failed: int  # neither a valid 2xx nor a refusal the scenario asks for
    refused: int  # the 4xx/503s the scenario asks for (422 for 1e308 rows, shed requests)
    p99_ms: float
    outcome: str


ROWS: list[ChaosRow] = []


def record(scenario: str, result: LoadResult, outcome: str, *, refused: int = 0) -> ChaosRow:
    """Add a scenario's row; `refused` of the result's non-2xx answers were the expected outcome."""
    row = ChaosRow(
        scenario, result.sent, result.failed - refused, refused, round(result.percentile_ms(0.99), 1), outcome
    )
    ROWS.append(row)
    return row
