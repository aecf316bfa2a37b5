"""Record autoscaler_series.json: a real server's load signals under bursts of load, from a real Prometheus.

    .venv/bin/python -m tests.integration.record_autoscaler_series   # ~4 minutes, <= 4 client connections

Not a test: it writes the recorded series that tests/unit/autoscaler/test_policy.py replays.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from service.model.schema import example_rows
from tests.integration.prometheus_server import start_prometheus
from tests.servers import start_server
from tools.loadgen import LoadRunner, post

OUT = Path(__file__).resolve().parents[1] / "unit" / "autoscaler" / "autoscaler_series.json"
STEP = 5
WINDOW = "15s"
# (seconds, client connections): 0 = idle
PHASES = [(20, 0), (40, 4), (30, 0), (20, 2), (120, 0)]
SELECTOR = 'job="propensity",route="/predict"'
QUERIES = {
    "values": f"sum(rate(propensity_http_request_duration_seconds_sum{{{SELECTOR}}}[{WINDOW}]))",
    "rate_values": f"sum(rate(propensity_http_requests_total{{{SELECTOR}}}[{WINDOW}]))",
}


def main() -> None:
    rows = example_rows()["rows"]
    requests = [post("/predict", json.dumps(r).encode()) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (
            start_server(root / "artifacts", root, workers=2) as server,
            start_prometheus(
                "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: propensity\n"
                f'    static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]\n',
                root / "prometheus",
            ) as prom,
        ):
            started = time.time()
            for seconds, connections in PHASES:
                print(f"{time.time() - started:5.0f}s: {connections} connections for {seconds}s", flush=True)
                if connections:
                    runner = LoadRunner(
                        server.url,
                        requests,
                        total=10**7,
                        concurrency=connections,
                        deadline_seconds=seconds,
                    )
                    print("   ", runner.run().summary(), flush=True)
                else:
                    time.sleep(seconds)
            end = time.time()
            series = {}
            for name, query in QUERIES.items():
                data = prom.api(
                    "query_range", query=query, start=f"{started:.0f}", end=f"{end:.0f}", step=str(STEP)
                )
                points = {
                    round(float(t)): float(v)
                    for t, v in (data["result"][0]["values"] if data["result"] else [])
                }
                series[name] = [
                    round(points[t], 6) if t in points else None
                    for t in range(round(started), round(end) + 1, STEP)
                ]
    OUT.write_text(
        json.dumps(
            {
                "how": (
                    "tests/integration/record_autoscaler_series.py: one 2-worker `propensity serve`, "
                    "prometheus "
                    "scraping it every 1 s; phases (seconds, client connections sending single rows): "
                    f"{PHASES}. "
                    f"'values' = {QUERIES['values']} (busy seconds per second, the default signal); "
                    f"'rate_values' = {QUERIES['rate_values']}; null = no series yet."
                ),
                "step_seconds": STEP,
                **series,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
