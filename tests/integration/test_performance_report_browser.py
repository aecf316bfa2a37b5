"""The performance report in a real headless browser (Debian's chromium) with no network: the page of a
synthetic prediction log (labels drawn from phat, five days, two versions) renders its plots and tables, and
asks no host for anything but itself."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.monitoring.performance import evaluate
from service.monitoring.performance_report import write_report
from tests.integration.test_docs_browser import CHROMIUM, render
from tests.unit.monitoring.performance_fixture import CUTOFF, synthetic_frame

PLOTS = ("auc", "calibration", "estimated-vs-realized", "reliability", "coverage")
REALIZED_BLUE = (0x15, 0x65, 0xC0)  # the realized points' colour: only the plots draw it


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server (free port) over a directory: the page's own origin, so that anything it
    fetched would show up in the net log as initiated by it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: make system-deps installs it")
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def colour_share(png: Path, rgb: tuple[int, int, int], tolerance: int = 40) -> float:
    """Share of the screenshot's pixels within `tolerance` of `rgb` on every channel."""
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    near = np.all(np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tolerance, axis=-1)
    return float(near.mean())


def blank_share(png: Path) -> float:
    """Share of (near) white pixels."""
    return float((np.asarray(Image.open(png).convert("L")) >= 250).mean())


def test_the_report_renders_its_plots_and_tables_offline(site: tuple[str, Path], tmp_path: Path) -> None:
    url, root = site
    report = evaluate(synthetic_frame(), cutoff=CUTOFF, by="day").to_dict()
    write_report(report, root / "report.html", title="Performance of propensity")
    dom, requests = render(url + "/report.html", tmp_path / "browser")
    screenshot = tmp_path / "browser" / "page.png"
    print(f"screenshot of the report: {screenshot}")

    assert "<h1>Performance of propensity</h1>" in dom
    figures = re.findall(
        r'<figure id="plot-([a-z-]+)-(\d)"[^>]*><img alt="[^"]+" src="data:image/png;base64,', dom
    )
    assert sorted(figures) == sorted((kind, key) for kind in PLOTS for key in "01")
    for table in ("overview", "realized", "estimated", "reliability"):
        assert f'<table class="{table}">' in dom, table
    assert "Model version v1" in dom and "Model version v2" in dom
    assert f'<b class="cutoff">{CUTOFF:.6g}</b>' in dom
    # the page asked for itself and nothing else: the plots are inline, no font, style or script fetched
    assert [r["url"] for r in requests] == [url + "/report.html"], requests
    # the screenshot (the page's top: the summary and the first plots) is a page, with the plots drawn
    assert screenshot.stat().st_size > 50_000
    assert blank_share(screenshot) < 0.95
    assert colour_share(screenshot, REALIZED_BLUE) > 0.0005


def test_an_external_reference_would_be_seen(site: tuple[str, Path], tmp_path: Path) -> None:
    """The check above can fail: a page that links anything outside is caught by the same net log."""
    url, root = site
    (root / "leaky.html").write_text(
        '<!DOCTYPE html><html><body><img src="http://example.com/x.png"><img src="/local.png"></body></html>'
    )
    _, requests = render(url + "/leaky.html", tmp_path / "browser")
    seen = {r["url"] for r in requests}
    assert "http://example.com/x.png" in seen and url + "/local.png" in seen
