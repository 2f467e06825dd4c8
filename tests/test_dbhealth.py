"""manage.py dbhealth against the real test bed: exit codes, parallel probes, JSON, table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from resilient_db.conf import get_settings
from resilient_db.health.probes import ProbeResult
from resilient_db.health.registry import get_registry
from resilient_db.health.report import build_report
from resilient_db.health.targets import clear_cache as clear_targets
from resilient_db.health.targets import targets_for
from resilient_db_testbed.bed_config import BedConfig

ROOT = Path(__file__).resolve().parent.parent
PG = ["--database", "default", "--database", "replica", "--database", "bouncers"]


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Probes record into the registry; leave no down marks for other tests."""
    get_registry().reset()
    yield
    get_registry().reset()


def run(*args: str) -> tuple[int, str, str]:
    """Run dbhealth through call_command; return (exit code, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("dbhealth", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), err.getvalue()


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), environ.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "django", "dbhealth", *args],
        capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT, check=False,
    )


@pytest.mark.postgres
def test_healthy_exits_zero(bed: BedConfig) -> None:
    code, out, _ = run(*PG, "--timeout", "2")
    assert code == 0, out
    assert "status: healthy (exit 0)" in out
    for alias in ("default", "replica", "bouncers"):
        assert f"\n{alias} " in out


@pytest.mark.postgres
def test_subprocess_exit_codes(bed: BedConfig) -> None:
    ok = run_process(*PG, "--timeout", "2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "\x1b[" not in ok.stdout  # piped: no colour
    unknown = run_process("--database", "nope")
    assert unknown.returncode == 2
    assert "Unknown database alias: nope" in unknown.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_replica_stopped_is_degraded(bed: BedConfig, server_control: Any) -> None:
    server_control.stop("pg_replica")
    code, out, err = run("--database", "default", "--database", "replica", "--timeout", "1")
    assert code == 1, out
    assert "database status: degraded" in err
    assert "replica: no usable target; reads fall back to default" in out
    proc = run_process("--database", "default", "--database", "replica", "--timeout", "1")
    assert proc.returncode == 1
    server_control.restore()
    # A restarted standby of an idle primary has replayed no transaction yet,
    # so its lag is unknown until the primary commits something.
    psycopg = pytest.importorskip("psycopg")

    with psycopg.connect(
        host=bed.host, port=bed.pg_primary_port, dbname=bed.pg_db, user=bed.pg_user,
        password=bed.pg_password, autocommit=True, connect_timeout=3,
    ) as primary:
        primary.execute("SELECT txid_current()")
    deadline = time.monotonic() + 10
    while run("--database", "replica")[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.postgres
@pytest.mark.slow
def test_alias_without_any_target_is_unavailable(bed: BedConfig, kill_peer: Any) -> None:
    kill_peer("pgbouncer_a")
    code, out, _ = run("--database", "bouncers", "--database", "default", "--timeout", "1")
    assert code == 1, out  # the second PgBouncer took over
    kill_peer("pgbouncer_b")
    code, out, _ = run("--database", "bouncers", "--database", "default", "--timeout", "1")
    assert code == 2, out
    assert "bouncers: no usable target" in out
    data = json.loads(run("--database", "bouncers", "--json", "--timeout", "1")[1])
    assert data["status"] == "unavailable"
    assert [t["probe"]["category"] for t in data["targets"]] == ["cannot_connect"] * 2


@pytest.mark.bed
@pytest.mark.slow
def test_ten_targets_one_frozen_finish_within_timeout(bed: BedConfig, freeze_peer: Any) -> None:
    rdb = dict(get_settings_raw())
    databases = {**rdb["DATABASES"]}
    bouncers = {**databases["bouncers"]}
    # A third target for bouncers (the primary itself): ten targets in all.
    bouncers["PEERS"] = [*bouncers["PEERS"], {"HOST": bed.host, "PORT": str(bed.pg_primary_port)}]
    databases["bouncers"] = bouncers
    with override_settings(RESILIENT_DB={**rdb, "DATABASES": databases}):
        from django.conf import settings

        total = sum(len(targets_for(a)) for a in settings.DATABASES)
        assert total == 10
        freeze_peer("pgbouncer_b")
        timeout = 1.0
        started = time.monotonic()
        code, out, _ = run("--json", "--timeout", str(timeout))
        elapsed = time.monotonic() - started
        data = json.loads(out)
    assert elapsed <= timeout + 1.0, elapsed
    assert len(data["targets"]) == 10
    frozen = [t for t in data["targets"] if not t["probe"]["ok"]]
    assert [t["id"] for t in frozen] == ["bouncers#1"]
    assert code >= 1


def get_settings_raw() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.RESILIENT_DB)


@pytest.mark.postgres
def test_json_schema(bed: BedConfig) -> None:
    code, out, _ = run(*PG, "--json")
    data = json.loads(out)
    assert code == 0, [a["reasons"] for a in data["aliases"]] + [t["probe"] for t in data["targets"]]
    assert data["schema"] == 1
    assert data["status"] == "healthy" and data["exit_code"] == 0
    assert set(data) == {
        "schema", "status", "exit_code", "generated_at", "duration", "timeout", "aliases",
        "targets",
    }
    assert [a["alias"] for a in data["aliases"]] == ["default", "replica", "bouncers"]
    replica = data["aliases"][1]
    assert replica["kind"] == "replica" and replica["primary"] == "default"
    assert replica["max_replica_lag"] == 5.0
    assert data["aliases"][0]["replicas"] == ["replica"]
    assert [t["id"] for t in data["targets"]] == ["default#0", "replica#0", "bouncers#0",
                                                  "bouncers#1"]
    target = data["targets"][0]
    assert set(target) >= {"id", "alias", "index", "peer", "label", "host", "port", "probe",
                           "registry", "usable", "lagging", "expected_role"}
    assert set(target["probe"]) == {"ok", "latency", "role", "lag", "category", "error", "note"}
    assert target["probe"]["role"] == "primary" and target["usable"] is True
    assert target["registry"]["state"] == "up"
    assert data["targets"][3]["peer"] is True
    assert bed.pg_password not in out


@pytest.mark.postgres
def test_no_password_even_in_errors(bed: BedConfig) -> None:
    from django.db import connections

    secret = "rdb-wrong-Secret-123"
    connections["replica"].settings_dict["PASSWORD"] = secret
    try:
        clear_targets()
        report = build_report(["replica"], timeout=2)
        text = json.dumps(report.as_dict())
    finally:
        connections["replica"].settings_dict["PASSWORD"] = bed.pg_password
        clear_targets()
    assert report.status == "degraded"
    assert secret not in text


@pytest.mark.postgres
def test_watch_piped_prints_plain_rounds(bed: BedConfig) -> None:
    started = time.monotonic()
    code, out, _ = run("--database", "default", "--watch", "0.2", "--count", "3")
    assert time.monotonic() - started < 5
    assert code == 0
    assert out.count("dbhealth at ") == 3
    assert "\x1b" not in out
    code, out, _ = run("--database", "default", "--watch", "0.1", "--count", "2", "--json")
    docs = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(docs) == 2 and all(d["schema"] == 1 for d in docs)


@pytest.mark.postgres
def test_watch_with_a_frozen_target_does_not_wait_for_it_every_round(
    bed: BedConfig, freeze_peer: Any
) -> None:
    from resilient_db.health import snapshot

    snapshot.reset()
    freeze_peer("pgbouncer_a")
    started = time.monotonic()
    code, out, _ = run("--database", "bouncers", "--watch", "0.2", "--count", "6",
                       "--timeout", "1")
    took = time.monotonic() - started
    snapshot.reset()
    assert out.count("dbhealth at ") == 6
    # The first (live) round and the first from recent results each wait for
    # the frozen peer once (1 s); the other four answer from recent results.
    # Probed live every round, it took 6 s.
    assert took < 1.0 + 1.0 + 6 * 0.2 + 1.0, took


@pytest.mark.bed
def test_table_fits_80_columns(bed: BedConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    _code, out, _ = run("--timeout", "2")
    lines = out.splitlines()
    assert lines[0].startswith("ALIAS / TARGET")
    assert max(len(line) for line in lines) <= 80, out
    # Columns line up: STATE starts at the same offset on every table row.
    state_at = lines[0].index("STATE")
    for line in lines[1:]:
        if line.startswith("status:"):
            break
        if line.strip() and not line.startswith("      "):
            assert line[state_at - 1] == " ", line


@pytest.mark.postgres
def test_colour_only_when_forced_and_never_with_no_color(
    bed: BedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plain, _ = run("--database", "default")
    assert "\x1b[" not in plain
    _, coloured, _ = run("--database", "default", "--force-color")
    assert "\x1b[" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    proc = run_process("--database", "default")
    assert "\x1b[" not in proc.stdout


# Status rules: pure logic over fabricated probe results.


def fake_probes(monkeypatch: pytest.MonkeyPatch, **by_alias: dict[str, Any]) -> None:
    def probe_many(targets: Any, *, timeout: Any = None, record: bool = True) -> list[ProbeResult]:
        out = []
        for t in targets:
            spec = by_alias.get(t.alias, {"ok": True, "role": "primary", "lag": 0.0})
            out.append(ProbeResult(target=t, latency=0.001, **spec))
        return out

    monkeypatch.setattr("resilient_db.health.report.probe_many", probe_many)


@pytest.mark.parametrize(
    ("specs", "status", "reason"),
    [
        ({}, "healthy", None),
        ({"replica": {"ok": True, "role": "replica", "lag": 9.0}}, "degraded",
         "replica: replication lag 9.0 s above MAX_REPLICA_LAG 5 s"),
        ({"replica": {"ok": True, "role": "replica", "lag": None}}, "degraded",
         "replica: replication lag unknown"),
        ({"replica": {"ok": False}}, "degraded", "replica: no usable target"),
        ({"default": {"ok": True, "role": "replica", "lag": 0.0}}, "unavailable",
         "default: no writable primary"),
        ({"default": {"ok": False}}, "unavailable", "default: no usable target"),
    ],
)
def test_status_rules(
    monkeypatch: pytest.MonkeyPatch, specs: dict[str, Any], status: str, reason: str | None
) -> None:
    specs.setdefault("replica", {"ok": True, "role": "replica", "lag": 0.1})
    fake_probes(monkeypatch, **specs)
    report = build_report(["default", "replica"], record=False)
    assert report.status == status
    reasons = [f"{a.alias}: {r}" for a in report.aliases for r in a.reasons]
    if reason is None:
        assert reasons == []
    else:
        assert any(r.startswith(reason) for r in reasons), reasons
    assert report.exit_code == {"healthy": 0, "degraded": 1, "unavailable": 2}[status]
    assert get_settings().alias("default").replicas == ("replica",)


# --wait: for entrypoints and init containers that start before the database.


def fake_sequence(monkeypatch: pytest.MonkeyPatch, statuses: list[str]) -> list[str]:
    """Make successive probe rounds report ``statuses`` (the last one repeats)."""
    seen: list[str] = []
    specs = {
        "healthy": {},
        "degraded": {"replica": {"ok": False}},
        "unavailable": {"default": {"ok": False}},
    }

    def probe_many(targets: Any, *, timeout: Any = None, record: bool = True) -> list[ProbeResult]:
        status = statuses[min(len(seen), len(statuses) - 1)]
        seen.append(status)
        by_alias: dict[str, dict[str, Any]] = {
            "replica": {"ok": True, "role": "replica", "lag": 0.1}, **specs[status],
        }
        return [
            ProbeResult(
                target=t, latency=0.001,
                **by_alias.get(t.alias, {"ok": True, "role": "primary", "lag": 0.0}),
            )
            for t in targets
        ]

    monkeypatch.setattr("resilient_db.health.report.probe_many", probe_many)
    monkeypatch.setattr("resilient_db.management.commands.dbhealth.WAIT_INTERVAL", 0.01)
    return seen


def test_wait_polls_until_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_sequence(monkeypatch, ["unavailable", "unavailable", "degraded", "healthy"])
    code, out, err = run("--database", "default", "--database", "replica", "--wait", "5")
    assert code == 0, out + err
    assert seen == ["unavailable", "unavailable", "degraded", "healthy"]
    assert "status: healthy (exit 0)" in out
    assert out.count("status:") == 1  # one table, the last round's


def test_wait_for_degraded_accepts_degraded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_sequence(monkeypatch, ["unavailable", "degraded"])
    code, out, err = run(
        "--database", "default", "--database", "replica", "--wait", "5", "--wait-for", "degraded"
    )
    assert code == 0, out + err
    assert seen == ["unavailable", "degraded"]
    assert "status: degraded (exit 1)" in out  # the table still says what it saw


def test_wait_times_out_with_the_last_status(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_sequence(monkeypatch, ["degraded"])
    started = time.monotonic()
    code, out, _ = run("--database", "default", "--database", "replica", "--wait", "0.3")
    assert 0.3 <= time.monotonic() - started < 2
    assert code == 1, out
    assert len(seen) > 2  # it polled, not slept the whole wait


def test_wait_says_what_it_waits_for_once_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    from resilient_db.health.errors import Category

    rounds = iter([Category.CANNOT_CONNECT] * 3 + [Category.SERVER_STARTING] * 3)

    def probe_many(targets: Any, *, timeout: Any = None, record: bool = True) -> list[ProbeResult]:
        category = next(rounds, None)
        if category is None:
            return [ProbeResult(target=t, ok=True, latency=0.001, role="primary", lag=0.0)
                    for t in targets]
        return [ProbeResult(target=t, ok=False, category=category, error="no") for t in targets]

    monkeypatch.setattr("resilient_db.health.report.probe_many", probe_many)
    monkeypatch.setattr("resilient_db.management.commands.dbhealth.WAIT_INTERVAL", 0.01)
    out, err = StringIO(), StringIO()
    call_command("dbhealth", "--database", "default", "--wait", "5", stdout=out, stderr=err)
    lines = err.getvalue().splitlines()
    assert len(lines) == 2, lines  # six rounds, two different situations
    assert "[cannot_connect]" in lines[0] and "[server_starting]" in lines[1]
    assert all(line.startswith("waiting for healthy (unavailable: default:") for line in lines)
    assert "status: healthy (exit 0)" in out.getvalue()


def test_wait_for_needs_wait() -> None:
    code, _, err = run("--wait-for", "degraded")
    assert code == 3
    assert "--wait-for needs --wait" in err


@pytest.mark.postgres
@pytest.mark.slow
def test_wait_returns_soon_after_the_primary_starts(bed: BedConfig, server_control: Any) -> None:
    server_control.stop("pg_primary")
    # Timed out while the primary is down: the unavailable code, within the wait
    # plus one probe timeout.
    started = time.monotonic()
    gone = run_process("--database", "default", "--wait", "1.5", "--timeout", "1")
    assert 1.5 <= time.monotonic() - started < 1.5 + 1 + 5  # + interpreter start-up
    assert gone.returncode == 2, gone.stdout + gone.stderr
    assert "status: unavailable (exit 2)" in gone.stdout
    assert "waiting" in gone.stderr

    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), environ.get("PYTHONPATH", "")) if p
    )
    waiting = subprocess.Popen(
        [sys.executable, "-m", "django", "dbhealth", "--database", "default", "--wait", "20",
         "--timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, cwd=ROOT,
    )
    try:
        time.sleep(2)
        assert waiting.poll() is None  # still waiting for the database
        server_control.start("pg_primary")  # returns once it accepts connections
        accepting = time.monotonic()
        out, err = waiting.communicate(timeout=25)
        returned = time.monotonic() - accepting
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, out + err
    assert "status: healthy (exit 0)" in out
    assert returned < 2.0, returned  # one poll interval plus a probe, not the whole wait


# A designed outcome is a report, not an error.


@pytest.mark.postgres
@pytest.mark.slow
def test_degraded_is_reported_once_without_an_error_line(
    bed: BedConfig, kill_peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    kill_peer("pgbouncer_b")
    proc = run_process("--database", "bouncers", "--timeout", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "status: degraded (exit 1)" in proc.stdout
    # The summary already says it: no "CommandError: database status: degraded".
    assert proc.stderr == ""
    # The peer's failure appears in the table only, not also as the registry's
    # log line (a project logging resilient_db to the console would print both).
    with caplog.at_level("DEBUG", logger="resilient_db"):
        code, out, _ = run("--database", "bouncers", "--timeout", "1")
    assert code == 1
    assert out.count("Connection refused") == 1, out
    assert [r.getMessage() for r in caplog.records if r.name.startswith("resilient_db")] == []
    # The registry still learned it (a shared store teaches the workers).
    down = [h for h in get_registry().all() if h.alias == "bouncers" and h.failures]
    assert len(down) == 1


class _FrozenClock:
    """``time`` as seen by the renderer and the records, fixed at one instant."""

    wall = 1_738_324_800.0  # 2025-01-31 12:00:00 UTC
    mono = 5_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def docs_example_report() -> Any:
    """The situation shown in docs/dbhealth.md, as the command builds it."""
    from resilient_db.health.errors import Category
    from resilient_db.health.freshness import NO_LIMITS, LagLimits
    from resilient_db.health.records import State, TargetHealth
    from resilient_db.health.report import Report, TargetRow, _alias_verdict
    from resilient_db.health.targets import Target

    now = _FrozenClock.wall
    refused = (
        'OperationalError: connection failed: connection to server at "pgb-b" (10.0.0.12), '
        "port 6432 failed: Connection refused"
    )

    def row(alias: str, host: str, port: str, index: int, kind: Any, expected: Any,
            probe: dict[str, Any], health: dict[str, Any], lagging: bool = False) -> TargetRow:
        target = Target(alias, host, port, "app", index=index)
        result = ProbeResult(target=target, **probe)
        record = TargetHealth(key=target.key, alias=alias, label=target.label, **health)
        return TargetRow(
            target=target, kind=kind, expected_role=expected, probe=result, health=record,
            usable=result.ok, lagging=lagging, error=None if result.ok else result.error,
        )

    up = {"since": now - 7380}
    default = [row("default", "db-a", "5432", 0, "primary", "primary",
                   {"ok": True, "latency": 0.0013, "role": "primary", "lag": 0.0}, up)]
    replica = [row("replica", "db-r", "5432", 0, "replica", "replica",
                   {"ok": True, "latency": 0.0009, "role": "replica", "lag": 7.4}, up,
                   lagging=True)]
    bouncers = [
        row("bouncers", "pgb-a", "6432", 0, "standalone", None,
            {"ok": True, "latency": 0.0008, "role": "primary", "lag": 0.0}, up),
        row("bouncers", "pgb-b", "6432", 1, "standalone", None,
            {"ok": False, "category": Category.CANNOT_CONNECT, "error": refused},
            {"state": State.DOWN, "failures": 3, "since": now - 12, "next_check_at": now + 4,
             "last_category": "cannot_connect", "last_error": refused}),
    ]
    return Report(
        status="degraded",
        aliases=(
            _alias_verdict("default", "primary", None, ("replica",), NO_LIMITS, default),
            _alias_verdict("replica", "replica", "default", (), LagLimits(5.0), replica),
            _alias_verdict("bouncers", "standalone", None, (), NO_LIMITS, bouncers),
        ),
        targets=(*default, *replica, *bouncers),
        generated_at=now,
        duration=1.02,
        timeout=2.0,
    )


def test_docs_example_is_what_the_command_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from resilient_db.health.render import render_summary, render_table

    text = (ROOT / "docs" / "dbhealth.md").read_text(encoding="utf-8")
    block = re.search(r"```console\n\$ python manage.py dbhealth\n(.*?)```", text, re.S)
    assert block is not None
    clock = _FrozenClock()
    monkeypatch.setattr("resilient_db.health.render.time", clock)
    monkeypatch.setattr("resilient_db.health.records.time", clock)
    report = docs_example_report()
    printed = render_table(report) + render_summary(report)
    assert block.group(1).rstrip("\n").splitlines() == printed
