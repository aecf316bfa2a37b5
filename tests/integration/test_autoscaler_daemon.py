"""`propensity autoscale` as a process: its metrics endpoint, holding without Prometheus, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.servers import PROPENSITY


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_the_daemon_serves_its_metrics_holds_and_stops_on_sigterm() -> None:
    """`propensity autoscale` as a process: Prometheus unreachable, an in-memory service at 1 (below min)."""
    port = free_port()
    env = {
        **os.environ,
        "PROPENSITY_AUTOSCALER_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "PROPENSITY_AUTOSCALER_STATIC_REPLICAS": "1",
        "PROPENSITY_AUTOSCALER_INTERVAL_SECONDS": "0.2",
        "PROPENSITY_AUTOSCALER_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [PROPENSITY, "autoscale"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    try:
        samples: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while samples.get('propensity_autoscaler_decisions_total{reason="signal_error"}', 0) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, samples
            time.sleep(0.1)
            with contextlib.suppress(OSError):
                samples = scrape(port)
        assert samples["propensity_autoscaler_current_replicas"] == 2  # min restored without Prometheus
        assert samples['propensity_autoscaler_decisions_total{reason="below_min"}'] == 1
        assert samples['propensity_autoscaler_signal_errors_total{reason="unreachable"}'] >= 2
        assert samples["propensity_autoscaler_last_success_timestamp_seconds"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output = proc.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()  # never left running; the assertion below then says it ignored SIGTERM
            output = proc.communicate()[0].decode()
    assert proc.returncode == 0, output
    assert "hold: no load data (signal_error): unreachable" in output
    assert "scaling propensity_api 1 -> 2 (below_min" in output
    assert "stopping" in output
