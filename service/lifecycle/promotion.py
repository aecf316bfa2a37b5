"""Promotion: an alias moves to a version only by an explicit, recorded step (who, when, why, the gate's
report), and the cutoff it brings is accepted explicitly.

The business partner approved one equation and one cutoff. A retrained version carries its own cutoff
(the 75th percentile of its phat on the training rows); promoting it into `production` would change the
decisions at that cutoff as well as the model. So when the version's cutoff differs from the one the alias
serves now, the promotion must say which to serve:

- `take`: the version's own cutoff;
- `keep`: the alias's current cutoff. The version is registered again with that cutoff (a new version,
  `derived_from` the first, its golden rows' outcomes recomputed at the kept cutoff; phat unchanged), and
  that one is promoted: every version's cutoff is the one it serves, so a replica, a report or a file
  scored with it never needs to know about an override.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from service.errors import ArtifactError
from service.model.registries import ModelRegistry

CutoffChoice = Literal["keep", "take"]


class CutoffNotAccepted(ArtifactError):
    status = 409
    kind = "cutoff-not-accepted"
    title = "The promotion changes the cutoff"


@dataclass(frozen=True)
class Promotion:
    alias: str
    version: str  # what the alias names now (a derived version under `keep`)
    previous: str | None
    cutoff: dict[str, Any]  # served, its own, the alias's before, the choice


def cutoff_of(registry: ModelRegistry, version: str) -> float:
    return float(registry.metadata(version)["cutoff"]["value"])


def promote(
    registry: ModelRegistry,
    version: str,
    alias: str = "production",
    *,
    cutoff: CutoffChoice | None = None,
    reason: str | None = None,
    by: str | None = None,
    create: bool = False,
    shadow: dict[str, Any] | None = None,
) -> Promotion:
    """Point `alias` at `version`, the audit log recording who, why, the cutoffs, the gate's report and
    what shadow scoring saw of it (`shadow`, service/lifecycle/shadow_summary.py), if read.
    Raises CutoffNotAccepted when the cutoff changes and `cutoff` does not say which one to serve."""
    version = registry.resolve(version)
    current = registry.aliases().get(alias)
    previous = str(current["version"]) if current else None
    metadata = registry.metadata(version)
    own = float(metadata["cutoff"]["value"])
    before = cutoff_of(registry, previous) if previous else None
    record: dict[str, Any] = {"own": own, "before": before, "choice": cutoff}
    target = version
    if before is not None and own != before:
        if cutoff is None:
            raise CutoffNotAccepted(
                f"{version} brings cutoff {own:g}; {alias} ({previous}) serves {before:g}. Say which to "
                f"serve: --cutoff keep ({version}'s model at {before:g}, registered as a new version) or "
                f"--cutoff take ({own:g})"
            )
        if cutoff == "keep":
            target = with_cutoff(registry, version, before, f"kept from {previous} when {alias} moved")
    served = cutoff_of(registry, target)
    record["served"] = served
    gate = (metadata.get("retraining") or {}).get("gate")
    registry.set_alias(
        alias,
        target,
        create=create,
        by=by,
        reason=reason,
        cutoff=record,
        gate=gate,
        shadow=shadow,
        derived_from=version if target != version else None,
    )
    return Promotion(alias, target, previous, record)


AUTO_PROMOTE_REASON = "the auto-promote policy (PROPENSITY_RETRAIN_AUTO_PROMOTE=true): the gate passed"


def auto_promote(registry: ModelRegistry, version: str, cutoff: CutoffChoice, by: str) -> dict[str, Any]:
    """The auto-promote policy's promotion of a challenger the gate passed; what the decision records."""
    done = promote(registry, version, cutoff=cutoff, by=by, reason=AUTO_PROMOTE_REASON)
    return {"version": done.version, "cutoff": done.cutoff}


def with_cutoff(registry: ModelRegistry, version: str, cutoff: float, rule: str) -> str:
    """`version`'s model registered again with `cutoff` (reused when that was done before)."""
    artifact = registry.load(version)  # the training side: the fitted Pipeline, unpickled
    model = copy.copy(artifact.model)
    model.cutoff = cutoff
    keep = {"name", "version", "created_at", "files", "library_versions"}
    metadata = {k: copy.deepcopy(v) for k, v in artifact.metadata.items() if k not in keep}
    metadata["cutoff"] = {**metadata.get("cutoff", {}), "value": cutoff, "rule": rule}
    metadata["derived_from"] = {"version": version, "sha256": artifact.sha256, "changed": "cutoff"}
    golden = metadata.get("golden_rows") or {}
    for row in golden.get("expected", []):
        row["business_outcome"] = int(row["phat"] > cutoff)
    if "fingerprint" in metadata:
        metadata["fingerprint"] = f"{metadata['fingerprint']}+cutoff={cutoff!r}"
    summary = (artifact.path / "summary.txt").read_text()
    return registry.publish(model, metadata, summary)
