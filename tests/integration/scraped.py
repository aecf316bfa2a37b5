"""Prometheus text as a dict: every sample by (name, sorted labels), summed over the texts given (the
replicas of a cluster)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


def samples(texts: Iterable[str]) -> dict[Key, float]:
    out: dict[Key, float] = defaultdict(float)
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return out


def total(metrics: dict[Key, float], name: str) -> float:
    """The sum of every sample of `name`, whatever its labels."""
    return sum(v for (n, _), v in metrics.items() if n == name)
