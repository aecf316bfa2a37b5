"""What serving from scorer.json saves (section "artifact"): a worker's memory and cold start when it loads
the serving artifact, beside the same worker loading the version's pickle as it did before (issue 16).

Each run is a fresh interpreter that builds the production app (create_app) on the benchmark's registry,
enters its lifespan (the model holder's first load: verify, read, compile, golden rows), answers one
/predict in process, and reports: seconds from the parent's spawn to ready (interpreter start and imports
included), its VmRSS and VmHWM, and whether pandas, scikit-learn or statsmodels were imported. The
"pickle" run is the same app with the holder's loader pointed back at `Registry.load` (unpickle the
Pipeline, compile from it). The two alternate, round by round.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tools.bench.core import Context, Result, median, section

ROUNDS = 5
TRAINING_STACK = ("pandas", "sklearn", "statsmodels")
WORKER = """
import json, sys, time
mode, root = sys.argv[1:3]
from fastapi.testclient import TestClient
from service.api.app import create_app
from service.model.registry import Registry
from service.settings import Settings
if mode == "pickle":  # the loader before the serving artifact: unpickle the fitted Pipeline
    Registry.load_serving = Registry.load
settings = Settings(artifacts_dir=root, prediction_log_enabled=False, drift_enabled=True, log_level="warning")
with TestClient(create_app(settings)) as client:
    ready = time.time()
    from service.model.schema import example_rows
    answer = client.post("/predict", json=example_rows()["rows"][:1])
    assert answer.status_code == 200, answer.text
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    print(json.dumps({
        "ready": ready,
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "hwm_mb": int(status["VmHWM"].split()[0]) / 1024,
        "phat": answer.json()[0]["phat"],
        "stack": sorted(m for m in TRAINING_STACK if m in sys.modules),
    }))
""".replace("TRAINING_STACK", repr(TRAINING_STACK))


def _run(ctx: Context, mode: str) -> dict[str, float | list[str]]:
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(ctx.registry_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker exited {done.returncode}: {done.stderr[-1500:]}")
    out: dict[str, float | list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    out["cold_s"] = float(out.pop("ready")) - started  # type: ignore[arg-type]
    return out


@section(
    "artifact", "a worker serving scorer.json vs the same worker unpickling the Pipeline: RSS, cold start"
)
def artifact_section(ctx: Context) -> list[Result]:
    runs: dict[str, list[dict[str, float | list[str]]]] = {"pickle": [], "data": []}
    for _ in range(2 if ctx.options.quick else ROUNDS):
        for mode in runs:
            runs[mode].append(_run(ctx, mode))
    phats = {float(r["phat"]) for rs in runs.values() for r in rs}  # type: ignore[arg-type]
    if len(phats) != 1:
        raise RuntimeError(f"the two loaders answered differently: {sorted(phats)}")

    def med(mode: str, key: str) -> float:
        return median([float(r[key]) for r in runs[mode]])  # type: ignore[arg-type]

    stacks = {mode: ", ".join(runs[mode][0]["stack"]) for mode in runs}  # type: ignore[arg-type]
    results = []
    for key, name, unit, scale in (
        ("rss_mb", "worker RSS after one /predict", "MB", 1.0),
        ("hwm_mb", "worker peak RSS (VmHWM)", "MB", 1.0),
        ("cold_s", "cold start to ready", "ms", 1e3),
    ):
        pickle, data = med("pickle", key), med("data", key)
        results.append(
            Result(
                "artifact",
                f"{name}: scorer.json",
                data * scale,
                unit,  # type: ignore[arg-type]
                ratio=data / pickle,
                ratio_label="scorer.json ÷ pickle",
                details={"pickle": pickle * scale, "data": data * scale, "runs": runs},
            )
        )
    results[0].note = (
        f"pickle loader: {med('pickle', 'rss_mb'):.0f} MB RSS, cold start {med('pickle', 'cold_s'):.2f} s, "
        f"imports {stacks['pickle'] or 'none'}; scorer.json: {med('data', 'rss_mb'):.0f} MB, "
        f"{med('data', 'cold_s'):.2f} s, imports {stacks['data'] or 'none of them'}"
    )
    return results
