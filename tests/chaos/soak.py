"""Run one soak: workers (threads, and child processes in the long form), faults, verdict."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from resilient_db_testbed import bed
from resilient_db_testbed.chaos import Controller, Fault, Window
from tests.chaos import sockets
from tests.chaos.accounting import Report, Snapshot, judge
from tests.chaos.workload import ThreadPool, WorkerLog, WorkerSpec, close_all_quietly

PRIMARIES = ("default", "mysql")
ALIASES = ("default", "replica", "bouncers", "mysql", "mysql_replica", "mysql_peers")
REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Options:
    """Knobs of a soak, read from the environment."""

    seconds: float = 60.0
    threads: int = 4
    processes: int = 0
    threads_per_process: int = 2
    seed: int = 0
    faults: str = ""  # comma-separated name prefixes; empty: every fault

    @classmethod
    def from_env(cls) -> Options:
        """Read ``RESILIENT_DB_CHAOS_*``."""
        env = os.environ.get
        return cls(
            seconds=float(env("RESILIENT_DB_CHAOS_SECONDS", "60")),
            threads=int(env("RESILIENT_DB_CHAOS_THREADS", "4")),
            processes=int(env("RESILIENT_DB_CHAOS_PROCESSES", "0")),
            threads_per_process=int(env("RESILIENT_DB_CHAOS_PROCESS_THREADS", "2")),
            seed=int(env("RESILIENT_DB_CHAOS_SEED", "0")) or random.SystemRandom().randrange(1, 2**31),
            faults=env("RESILIENT_DB_CHAOS_FAULTS", ""),
        )


def chaos_settings(shared_registry: bool) -> dict[str, Any]:
    """Return the ``RESILIENT_DB`` of the soak: the suite's, with short back-offs.

    Short intervals keep the windows in which an alias counts as down close to the
    fault itself; with several processes the registry lives in Redis so that what
    one process learns, the others use.
    """
    raw: dict[str, Any] = copy.deepcopy(settings.RESILIENT_DB)
    raw["CHECK_INTERVAL"] = 0.5
    raw["MAX_CHECK_INTERVAL"] = 2.0
    raw["CONNECT_TIMEOUT"] = 1.0
    raw["RETRY"] = {"READS": 3, "DEADLINE": 5.0, "BACKOFF": 0.05}
    for primary in PRIMARIES:
        raw["DATABASES"].setdefault(primary, {})["MAX_REPLICA_LAG"] = 2.0
    if shared_registry:
        raw["REGISTRY"] = {"STORE": "cache", "CACHE": "redis"}
    return raw


def grace(raw: dict[str, Any]) -> float:
    """Return how long after a fault is undone reads on its aliases may still fail.

    A target marked down is retried when its back-off (at most MAX_CHECK_INTERVAL)
    expires; the retry then needs up to CONNECT_TIMEOUT. One more second covers the
    read that was already waiting when the window closed.
    """
    return float(raw["MAX_CHECK_INTERVAL"]) + float(raw["CONNECT_TIMEOUT"]) + 1.0


def snapshot(run_id: str) -> dict[str, Snapshot]:
    """Read what each primary holds for ``run_id`` (bounded retries: the bed just healed)."""
    from tests.testapp.models import Author, Book, Item

    result: dict[str, Snapshot] = {}
    for primary in PRIMARIES:
        last: Exception | None = None
        for _ in range(20):
            try:
                snap = Snapshot()
                names = Author.objects.using(primary).filter(name__startswith=run_id)
                snap.authors = Counter(names.values_list("name", flat=True))
                titles = Book.objects.using(primary).filter(title__startswith=run_id)
                snap.books = Counter(titles.values_list("title", flat=True))
                items = Item.objects.using(primary).filter(key__startswith=run_id)
                snap.counters = dict(items.values_list("key", "value"))
                result[primary] = snap
                break
            except Exception as exc:  # the server may still be finishing its restart
                last = exc
                close_all_quietly()
                time.sleep(0.5)
        else:
            raise RuntimeError(f"cannot read the final state of {primary}") from last
    return result


def _child_spec(run_id: str, index: int, opts: Options, stop_at: float,
                raw: dict[str, Any], workdir: Path) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "names": {a: connections[a].settings_dict["NAME"] for a in ALIASES},
        "resilient_db": raw,
        "routers": list(settings.DATABASE_ROUTERS),
        "workers": [
            {"name": f"p{index}t{t}", "seed": opts.seed * 1000 + index * 10 + t}
            for t in range(opts.threads_per_process)
        ],
        "stop_at": stop_at,
        "ready": str(workdir / f"ready-{index}"),
        "out": str(workdir / f"log-{index}.json"),
    }


def run_soak(faults: list[Fault], opts: Options, workdir: Path, raw: dict[str, Any]) -> Report:
    """Run the soak and return the judged report (also written under ``workdir``)."""
    run_id = f"chaos{opts.seed}"
    started = time.time()
    stop_at = started + opts.seconds
    close_all_quietly()
    names = {bed.config().port(n): n for n in bed.SERVER_NAMES}
    ports = set(names)
    sockets_before = sockets.held(ports)

    specs = [WorkerSpec(name=f"t{i}", run_id=run_id, stop_at=stop_at, seed=opts.seed + i)
             for i in range(opts.threads)]
    pool = ThreadPool(specs)
    pool.setup()

    children: list[tuple[subprocess.Popen[bytes], dict[str, Any]]] = []
    for index in range(opts.processes):
        spec = _child_spec(run_id, index, opts, stop_at, raw, workdir)
        spec_path = workdir / f"spec-{index}.json"
        spec_path.write_text(json.dumps(spec))
        out = open(workdir / f"child-{index}.out", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.child", str(spec_path)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        children.append((proc, spec))
    _wait_ready(children, timeout=60.0)

    controller = Controller(faults, stop_at=stop_at, seed=opts.seed)
    pool.start()
    controller.start()
    stuck: list[str] = []
    try:
        # Workers stop at stop_at; anything alive 30 s later is stuck (the controller
        # undoes its last fault at least 8 s before stop_at).
        join_deadline = time.monotonic() + max(0.0, stop_at - time.time()) + 30.0
        stuck += pool.join(join_deadline)
        if not controller.stop(timeout=max(1.0, join_deadline - time.monotonic())):
            stuck.append("chaos-controller")
        for proc, spec in children:
            try:
                proc.wait(timeout=max(1.0, join_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stuck.append(f"process {spec['workers'][0]['name'][:2]} (killed)")
                proc.kill()
                proc.wait(timeout=10)
    finally:
        controller.stop(timeout=60.0)

    # Children count their own sockets (this process sees only its descriptors).
    new = sockets.leaked(sockets_before, ports, cache_ports={bed.config().port("redis")})
    logs: list[WorkerLog] = pool.logs()
    leaked_in_children = 0
    leaked_where: list[str] = []
    for _proc, spec in children:
        path = Path(spec["out"])
        if not path.exists():
            stuck.append(f"{spec['out']} missing")
            continue
        data = json.loads(path.read_text())
        logs += [WorkerLog.from_json(w) for w in data["logs"]]
        leaked_in_children += int(data["leaked_sockets"])
        leaked_where += data["leaked"]
        stuck += data["stuck"]

    close_all_quietly()
    report = judge(logs, controller.windows, snapshot(run_id), grace=grace(raw),
                   run_started=started)
    report.add("run.seconds", round(time.time() - started))
    report.add("run.seed", opts.seed)
    report.add("run.threads", opts.threads)
    report.add("run.processes", opts.processes)
    report.add("threads.stuck", len(stuck))
    for name in stuck:
        report.violate("stuck", name)
    leaked = len(new) + leaked_in_children
    report.add("connections.leaked", leaked)
    if leaked:
        where = "; ".join([h.describe(names) for h in new] + leaked_where)
        report.violate("connection_leaked",
                       f"{leaked} socket(s) to the bed still open after the run: {where}")
    if controller.crashed:
        report.violate("controller_crashed", controller.crashed.strip()[-500:])
    _write_artifacts(workdir, report, controller.windows, logs, started)
    return report


def _wait_ready(children: list[tuple[subprocess.Popen[bytes], dict[str, Any]]],
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc, spec in children:
        while not Path(spec["ready"]).exists():
            if proc.poll() is not None:
                raise RuntimeError(f"chaos child exited early ({proc.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError("chaos child did not get ready in time")
            time.sleep(0.05)


def _write_artifacts(workdir: Path, report: Report, windows: list[Window],
                     logs: list[WorkerLog], started: float) -> None:
    (workdir / "report.txt").write_text(report.text())
    # Every operation that did not simply succeed, with its time from the start.
    with open(workdir / "failures.jsonl", "w") as fh:
        for log in logs:
            for op in [*log.writes, *log.reads]:
                if getattr(op, "ok", True) and getattr(op, "outcome", "committed") == "committed":
                    continue
                row = dataclasses.asdict(op)
                row["worker"], row["at"] = log.name, round(op.started - started, 3)
                fh.write(json.dumps(row) + "\n")
    (workdir / "report.json").write_text(json.dumps({
        "counts": report.counts,
        "errors": dict(report.errors),
        "violations": report.violations,
        "windows": [dataclasses.asdict(w) for w in windows],
    }, indent=2))
