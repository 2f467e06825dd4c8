"""The demo's web dashboard renders its data in a real browser (headless Chromium).

The document is built by the demo's own code (``WebFeed``, the summary and
the write ledger) from recorded samples; the page is the example project's
``/demo/`` under Django's live server. Chromium runs the page's script and
the DOM it leaves, and a screenshot, are checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.load import ACK, OWN_READ, READ, WRITE, Load, Sample, WriteRecord
from demo.observer import HealthWatcher, TargetState
from demo.report import check_writes, comparison_rows, phase_stats
from demo.runner import RunResult, web_summary
from demo.web import RunState, WebFeed, registry_view

NAMES = ["baseline", "kill peer", "stop replica"]
WHATS = ["steady traffic", "SIGKILL the PgBouncer carrying the writes", "stop the replica"]


def chromium() -> str:
    """Return Chromium's path, installing Debian's package when missing (as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here "
                    "(needs root and apt-get: apt-get install chromium)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"apt-get install chromium failed ({done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()[-300:]}")
    return found


def samples() -> list[Sample]:
    """Forty-five seconds of traffic: a healthy phase, a failover, a stopped replica."""
    out = []
    for second in range(45):
        phase = 0 if second < 15 else 1 if second < 30 else 2
        peer = "pgbouncer_a" if phase == 0 else "pgbouncer_b"
        for i in range(20):
            t = second + i / 20
            if phase == 1 and second == 15 and i < 3:
                out.append(Sample(t, phase, READ, False, 0, 5.0, "", "TimeoutError"))
                continue
            replica = "pg_primary" if phase == 2 else "pg_replica"
            out.append(Sample(t, phase, READ, True, 200, 0.004 + i / 4000, replica))
        out.append(Sample(second + 0.5, phase, WRITE, True, 201, 0.012, peer))
        out.append(Sample(second + 0.6, phase, OWN_READ, True, 200, 0.006, peer))
    return out


@pytest.fixture
def document(tmp_path: Path) -> Iterator[Path]:
    load = Load(1, "demo-test", lambda served: "x")
    load.stats.samples.extend(samples())
    load.now = lambda: 45.0  # type: ignore[method-assign]
    watcher = HealthWatcher({}, lambda host, port: f"{host}:{port}")
    watcher.status = "degraded"
    watcher.targets = {
        "pgbouncer_a": TargetState("pgbouncer_a", False, "cannot_connect", None),
        "pgbouncer_b": TargetState("pgbouncer_b", True, "up", 0.0),
        "pg_replica": TargetState("pg_replica", False, "cannot_connect", None),
    }
    feed = WebFeed(tmp_path / "dashboard.json", lambda host, port: f"{host}:{port}")
    run = RunState("resilient", "django-resilient-db", NAMES, WHATS, 60.0, [0.0, 15.0, 30.0], 2)
    feed.follow(run, load, watcher, lambda: ["15.0s  killed pgbouncer_a (SIGKILL)"], None)
    # The site's health endpoint, as the feed reads it from the app server.
    health = {"targets": [
        {"id": "default#0", "alias": "default", "host": "127.0.0.1", "port": "26732",
         "usable": False, "registry": {"state": "down", "failures": 3,
                                       "last_category": "cannot_connect"}},
        {"id": "default#1", "alias": "default", "host": "127.0.0.1", "port": "26733",
         "usable": True, "registry": {"state": "up", "failures": 0, "last_category": None}},
    ]}
    ports = {"26732": "pgbouncer_a", "26733": "pgbouncer_b"}
    feed._registry = registry_view(health, lambda host, port: ports[port])
    stats = phase_stats(load.stats.samples, 3)
    writes = [WriteRecord(f"k{i}", i // 15, ACK, acks=1) for i in range(45)]
    tallies = check_writes(writes, {f"k{i}": 1 for i in range(45)}, 3)
    result = RunResult("resilient", NAMES, stats, tallies, [(0, 15), (15, 30), (30, 45)])
    feed.finish(web_summary(result))
    feed.comparison = {
        "headers": ["fault", "stock: served", "worst", "lost/doubled/stale",
                    "resilient: served", "worst", "lost/doubled/stale"],
        "rows": comparison_rows(NAMES, (stats, tallies), (stats, tallies)),
    }
    feed.done = True
    feed.write()
    yield feed.path


def browse(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=5000", *extra, url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_dashboard_renders_the_demo_data(
    document: Path, live_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.DEMO_STATE_FILE = str(document)
    url = f"{live_server.url}/demo/"
    dom = browse(url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # Whitespace between tags is the template's layout, not content.
    html = re.sub(r">\s+<", "><", dom.stdout)
    # Everything below is written by the page's script from state.json.
    assert "django-resilient-db" in html
    assert "phase 3/3: stop replica" in html
    assert "<td>kill peer</td><td>15–30 s</td><td>330</td><td>327</td>" in html
    assert '<td class="bad">3</td>' in html  # the failures of the kill phase
    assert "pg_replica 91%, pgbouncer_b 9%" in html  # who served after the failover
    assert "<td>pgbouncer_a</td><td>default</td><td><span class=\"pill down\">down</span>" in html
    assert "<polyline" in html and 'fill="#e53935"' in html  # the timeline and its failures
    assert "cannot_connect" in html  # dbhealth's view of the dead peer
    assert "killed pgbouncer_a (SIGKILL)" in html
    assert "Write ledger: <b>45</b> acknowledged" in html
    assert "0 lost" in html and "0 doubled" in html
    assert "Side by side" in html and "327/330 (99%)" in html
    shot = tmp_path / "dashboard.png"
    done = browse(url, tmp_path, f"--screenshot={shot}", "--window-size=1400,1700",
                  "--hide-scrollbars")
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 40_000  # a rendered page with a chart and tables, not a blank one
    target = os.environ.get("DEMO_SCREENSHOT_TO")
    if target:
        shutil.copyfile(shot, target)


def test_page_without_a_demo_says_so(client: Any, settings: Any) -> None:
    settings.DEMO_STATE_FILE = ""
    response = client.get("/demo/state.json")
    assert response.status_code == 404
    assert "no demo is running" in response.json()["error"]
    page = client.get("/demo/")
    assert page.status_code == 200
    assert b"<script>" in page.content and b"http" not in page.content.split(b"<script>")[1].split(
        b"</script>")[0].replace(b"http://www.w3.org/2000/svg", b"")
