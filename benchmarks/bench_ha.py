"""Leader changes and Galera node faults on the real HA clusters, ours beside stock Django.

Runs the tests of ``tests/ha`` (Patroni with etcd, a three-node Galera
cluster; real SIGKILLs, a real Patroni switchover, a real ``gmcast.isolate``)
and turns the figures each test prints into rows: requests, failed reads and
writes, the worst request, the HA manager's own time (a new leader visible in
Patroni's ``/cluster``) and ours on top of it (the first write after it), lost
and doubled writes. The stock Django row (libpq multi-host,
``target_session_attrs=read-write``) comes from the same run on the same cluster.

Run: ``RESILIENT_DB_HA=1 python benchmarks/bench_ha.py`` with the clusters up
(``PYTHONPATH=testbed python -m resilient_db_testbed.ha up``), or ``nox -s ha``
for the tests alone. Without ``RESILIENT_DB_HA=1`` it says so and keeps the last
results. About three minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import _common as c

# The one-line summaries the HA tests print (tests/ha/test_*.py), in table order.
PREFIXES = (
    "leader killed (resilient)",
    "leader killed (stock Django, libpq multi-host)",
    "planned switchover (resilient)",
    "old leader rejoined",
    "rejoined member behind the byte limit",
    "galera node killed",
    "galera node isolated",
    "galera node back in traffic",
)


def summaries(output: str) -> dict[str, str]:
    """Return the HA tests' summary lines from ``output``, keyed by their prefix."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        for prefix in PREFIXES:
            if line.startswith(prefix):
                found[prefix] = line[len(prefix):].lstrip(": ").strip()
    return found


def main() -> int:
    if os.environ.get("RESILIENT_DB_HA") != "1":
        print("bench_ha: the HA clusters were not requested (set RESILIENT_DB_HA=1 with the "
              "clusters up); the last results are kept")
        return 0
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/ha", "-m", "ha", "-s", "-q", "-p",
         "no:cacheprovider"],
        cwd=c.ROOT, capture_output=True, text=True, timeout=1800,
    )
    output = proc.stdout + proc.stderr
    tail = [line for line in output.splitlines() if " passed" in line or " failed" in line]
    print(tail[-1] if tail else output[-2000:])
    found = summaries(output)
    rows = [[prefix, found.get(prefix, "not printed (test failed or skipped)")]
            for prefix in PREFIXES]
    markdown = (
        "Command: `RESILIENT_DB_HA=1 python benchmarks/bench_ha.py` with the clusters up "
        "(Patroni `ttl` 20, `loop_wait` 2, `retry_timeout` 4; Galera `evs.inactive_timeout` "
        "4 s; `RETRY.DEADLINE` 5 s; two threads of writes and reads). Outcome of the tests: "
        f"{tail[-1].strip('= ') if tail else 'unknown'}.\n\n"
        + c.table(["fault", "measured"], rows)
    )
    print(markdown)
    c.write_result("bench_ha", "HA clusters: leader changes and Galera node faults", markdown,
                   {"rows": rows, "returncode": proc.returncode})
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
