"""The nginx policy every deployment shares (nginx/nginx.conf.template): bounded memory for large bodies, a
cap on large requests in flight, least_conn and upstream timeouts (longer for large requests), API keys and
per-client rate limits; `nginx -t` on every variant the local cluster renders."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from service.serving.pipeline import OFFLOAD_MIN_BYTES
from tools import swarm_config
from tools.cluster import check_nginx_conf
from tools.cluster_config import ClusterConfig, decimal_below, nginx_conf, rate_limit_values

needs_nginx = pytest.mark.skipif(
    shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin") is None, reason="needs nginx"
)


def config(tmp_path: Path, **overrides: object) -> ClusterConfig:
    return ClusterConfig(run_dir=tmp_path / "run", artifacts_dir=tmp_path / "artifacts", **overrides)  # type: ignore[arg-type]


def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api keys.map"  # a space: the include must be quoted
    path.write_text('"k-1" alice;\n"k-2" bob;\n')
    return path


def location(text: str, name: str) -> str:
    """The body of one `location <name> { ... }` block (the template's blocks nest at most one `if`)."""
    start = text.index(f"location {name} {{")
    end = text.index("\n        }\n", start)
    return text[start:end]


@pytest.mark.parametrize("limit", [1, 2, 9, 10, 99, 100, 101, 1000, 1234, 65536])
def test_decimal_below_matches_exactly_the_smaller_numbers(limit: int) -> None:
    pattern = re.compile(f"^{decimal_below(limit)}$")
    for n in range(0, 10 * limit + 10):
        assert bool(pattern.match(str(n))) == (n < limit), n
    assert not pattern.match("") and not pattern.match("-1") and not pattern.match("1e3")


def test_decimal_below_the_default_large_size() -> None:
    limit = 256 * 1024
    pattern = re.compile(f"^{decimal_below(limit)}$")
    for n in [0, 1, 99_999, 100_000, 199_999, 262_000, limit - 1]:
        assert pattern.match(str(n)), n
    for n in [limit, limit + 1, 262_150, 270_000, 999_999, 1_000_000, 33_554_432, 10**12]:
        assert not pattern.match(str(n)), n
    assert not pattern.match("0" * 7 + "1")  # leading zeros: longer, so large (the safe side)


def test_large_means_what_the_app_scores_off_its_event_loop(tmp_path: Path) -> None:
    assert config(tmp_path).large_body_bytes == OFFLOAD_MIN_BYTES


def test_large_bodies_go_to_disk_and_a_few_at_a_time(tmp_path: Path) -> None:
    c = config(tmp_path, max_large_requests=5)
    text = nginx_conf(c)
    assert "client_body_buffer_size 262144;" in text and "client_max_body_size 33554432;" in text
    assert f"client_body_temp_path {c.run_dir}/nginx/client_body;" in text
    assert f"proxy_temp_path {c.run_dir}/nginx/proxy;" in text
    assert "proxy_buffers 16 64k;" in text  # an answer's memory is bounded too
    assert 'map "$content_length:$http_transfer_encoding" $large_request {' in text
    assert f'"~^{decimal_below(262144)}:$" "";' in text and '":" "";' in text and "default 1;" in text
    assert "limit_conn_zone $large_request zone=large:1m;" in text
    assert "limit_conn large 5;" in text and "limit_conn_status 503;" in text
    assert "error_page 503 = @busy;" in text and "error_page 502 504 = @unavailable;" in text
    busy = location(text, "@busy")
    assert "add_header Retry-After 1 always;" in busy and "return 503 '" in busy
    problem = json.loads(busy.split("return 503 '", 1)[1].rsplit("'", 1)[0])
    assert problem["type"] == "https://propensity.invalid/problems/overloaded"
    assert problem["status"] == 503 and "5 requests" in problem["detail"]


def test_a_hung_replica_is_avoided_and_large_requests_get_longer_timeouts(tmp_path: Path) -> None:
    assert config(tmp_path).upstream_timeout_seconds == 10.0
    text = nginx_conf(config(tmp_path, upstream_timeout_seconds=1.5))
    server = text[text.index("    server {") : text.index("        location = /predict {")]
    assert "proxy_read_timeout 1500ms;" in server and "proxy_send_timeout 1500ms;" in server
    assert "proxy_next_upstream_timeout 4500ms;" in server  # a request that timed out is retried
    assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in server
    for directive in ("client_header_timeout 10s;", "client_body_timeout 10s;", "send_timeout 10s;"):
        assert directive in text
    assert "least_conn;" in text  # a hung replica holding requests stops getting new ones
    predict = location(text, "= /predict")
    assert "if ($large_request) {\n                rewrite ^ /.large/predict last;" in predict
    large = location(text, "= /.large/predict")
    assert "internal;" in large and "proxy_pass http://propensity/predict;" in large
    assert "proxy_read_timeout 30s;" in large and "proxy_next_upstream_timeout 60s;" in large


def test_keys_off_the_rate_limit_counts_per_address(tmp_path: Path) -> None:
    text = nginx_conf(config(tmp_path, rate_limit_per_second=20, rate_limit_burst=7))
    assert "limit_req_zone $binary_remote_addr zone=predict:10m rate=20r/s;" in text
    assert "$api_client" not in text and "{ return 401; }" not in text
    for name in ("= /predict", "= /.large/predict"):
        assert "limit_req zone=predict burst=7 nodelay;" in location(text, name)


def test_keys_on_every_route_needs_a_key_and_the_limit_counts_per_key(tmp_path: Path) -> None:
    keys = keys_file(tmp_path)
    text = nginx_conf(config(tmp_path, api_keys_file=keys, rate_limit_per_second=20))
    assert f'include "{keys}";' in text and "map $http_x_api_key $api_client {" in text
    assert "limit_req_zone $api_client zone=predict:10m rate=20r/s;" in text
    check = 'if ($api_client = "") { return 401; }'
    assert check in location(text, "= /predict") and check in location(text, "/")
    assert check not in location(text, "= /health")  # nginx's own liveness stays open
    assert 'proxy_set_header X-API-Key "";' in text  # the key stays at the edge
    rate_limited = location(text, "@rate_limited")
    assert "add_header Retry-After 1 always;" in rate_limited and "return 429 '" in rate_limited


def test_rates_nginx_cannot_write_per_second_are_written_per_minute() -> None:
    assert "rate=30r/m;" in rate_limit_values("$k", 0.5, 0, off="")["RATE_LIMIT_ZONE"]
    assert "rate=1000000r/s;" in rate_limit_values("$k", 1e6, 0, off="")["RATE_LIMIT_ZONE"]
    assert rate_limit_values("$k", 0.5, 0, off="")["RATE_LIMIT"].strip() == "limit_req zone=predict;"
    assert rate_limit_values("$k", 0, 5, off="# off")["RATE_LIMIT_ZONE"] == "# off"


def test_config_checks_and_round_trips_the_new_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="large_body_bytes"):
        config(tmp_path, large_body_bytes=64 * 1024 * 1024)
    with pytest.raises(ValueError, match="max_large_requests"):
        config(tmp_path, max_large_requests=0)
    with pytest.raises(ValueError, match="upstream_timeout_seconds"):
        config(tmp_path, upstream_timeout_seconds=0)
    with pytest.raises(ValueError, match="double quote"):
        config(tmp_path, api_keys_file=Path('/a"b'))
    c = config(tmp_path, api_keys_file=keys_file(tmp_path), max_large_requests=3)
    assert ClusterConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    plain = dataclasses.replace(c, api_keys_file=None)
    assert ClusterConfig.from_json(json.loads(json.dumps(plain.to_json()))) == plain


@needs_nginx
@pytest.mark.parametrize("keys", [False, True])
@pytest.mark.parametrize("rate", [0.0, 25.0, 0.5])
def test_nginx_t_on_every_variant(tmp_path: Path, keys: bool, rate: float) -> None:
    c = config(
        tmp_path,
        replicas=3,
        rate_limit_per_second=rate,
        api_keys_file=keys_file(tmp_path) if keys else None,
        large_body_bytes=1024 * 1024,
    )
    c.run_dir.mkdir(parents=True)
    (c.run_dir / "nginx.conf").write_text(nginx_conf(c))
    check_nginx_conf(c.run_dir / "nginx.conf", c.run_dir)


def test_the_swarm_nginx_limits_per_client_key_and_shares_the_policy() -> None:
    local = nginx_conf(ClusterConfig(run_dir=Path("/r"), artifacts_dir=Path("/a")))
    for variant in ("production", "test"):
        text = swarm_config.nginx_conf(variant)
        assert "limit_req_zone $api_client zone=predict:10m rate=1000r/s;" in text
        assert "limit_req_status 429;" in text
        for name in ("= /predict", "= /.large/predict"):
            assert "limit_req zone=predict burst=2000 nodelay;" in location(text, name)
        for shared in (
            "client_body_buffer_size 262144;",
            "limit_conn large 8;",
            "proxy_read_timeout 10000ms;",
            "least_conn;",
            "add_header Retry-After 1 always;",
        ):
            assert shared in text and shared in local, shared
        # the image's compiled-in temp paths: nginx is not read-only in either stack
        assert "    client_body_temp_path " not in text
