"""Run every ``benchmarks/bench_*.py`` and write ``docs/benchmarks.md``.

Each benchmark runs in its own process (Django is configured once per process),
with a time limit; its Markdown section comes from ``benchmarks/results/<name>.md``.
A benchmark that fails is listed as such with the tail of its output.

Run: ``python benchmarks/run_all.py [--quick] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as c

HERE = Path(__file__).resolve().parent
DOCS = c.ROOT / "docs"
# Pages of their own, written by their benchmarks: linked when present.
PAGES = {
    "bench_registry": ("benchmarks-registry.md", "Health registry hot path"),
    "bench_router": ("benchmarks-router.md", "Router decision cost"),
    "bench_backends": ("benchmarks-backends.md", "Per-query overhead against stock Django"),
}
TIMEOUT = 1800.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the summary page; return 1 if any failed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--only", nargs="*", default=None, help="names like bench_memory")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.quick:
        env["RESILIENT_DB_BENCH_QUICK"] = "1"
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only]
    outcomes: list[tuple[str, bool, float, str]] = []
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, str(script)], cwd=c.ROOT, env=env, capture_output=True,
                text=True, timeout=TIMEOUT,
            )
            ok, tail = proc.returncode == 0, (proc.stdout + proc.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            ok, tail = False, f"timed out after {TIMEOUT:.0f} s"
        outcomes.append((script.stem, ok, time.monotonic() - started, tail))
        print(f"   {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s", flush=True)
    if args.only:
        # Sections of the benchmarks not rerun come from their last results.
        ran = {name for name, *_ in outcomes}
        outcomes += [(s.stem, True, 0.0, "") for s in sorted(HERE.glob("bench_*.py"))
                     if s.stem not in ran and (c.RESULTS / f"{s.stem}.md").exists()]
        outcomes.sort()
    page = render(outcomes, quick=args.quick)
    (DOCS / "benchmarks.md").write_text(page)
    print(f"wrote {DOCS / 'benchmarks.md'}")
    return 0 if all(ok for _, ok, _, _ in outcomes) else 1


def render(outcomes: list[tuple[str, bool, float, str]], *, quick: bool) -> str:
    """Return the Markdown of docs/benchmarks.md."""
    c.configure({})  # machine() reads Django's version
    m = c.machine()
    lines = [
        "# Benchmarks",
        "",
        "What the resilience costs when nothing fails, and how fast it acts when something "
        "does, measured on the project's test bed (real PostgreSQL, PgBouncer, MariaDB) "
        "side by side with stock Django. The stock baseline runs with persistent "
        "connections and `CONN_HEALTH_CHECKS = True`: the fair comparison, since that is "
        "Django's own answer to dead connections.",
        "",
        "## Machine",
        "",
        c.table(["", ""], [[k, v] for k, v in m.items()]),
        "",
        f"Generated {datetime.date.today().isoformat()} from revision {c.revision()}"
        + (" with `--quick` (short runs: indicative only)." if quick
           else ": full runs (not `--quick`).")
        + " Each section ends with the kind of run its figures come from.",
        "",
        "## Rerun",
        "",
        "```sh",
        "PYTHONPATH=testbed python -m resilient_db_testbed.bed up      # the test bed",
        "nox -s bench                               # every benchmark, one by one",
        "python benchmarks/run_all.py               # every benchmark + this page",
        "python benchmarks/bench_memory.py          # one of them",
        "python benchmarks/bench_backends.py --cell pg-psycopg2   # one cell of one",
        "python benchmarks/run_all.py --only bench_failures       # rerun one, keep the rest",
        "```",
        "",
        "`RESILIENT_DB_BENCH_QUICK=1` (or `run_all.py --quick`) shortens every run. "
        "`bench_failures.py` stops and starts the bed's servers: never run it against a bed "
        "that tests are using (`RESILIENT_DB_BED_PORT_BASE` and `RESILIENT_DB_BED_DIR` give "
        "a second bed).",
        "",
    ]
    linked = []
    for page, title in PAGES.values():
        if (DOCS / page).exists():
            linked.append(f"- [{title}]({page})")
    if linked:
        lines += ["## Detailed pages", "", *linked, ""]
    for name, ok, seconds, tail in outcomes:
        section = c.RESULTS / f"{name}.md"
        if name in PAGES and (DOCS / PAGES[name][0]).exists() and not section.exists():
            continue
        if ok and section.exists():
            lines += [section.read_text().strip(), ""]
        elif not ok:
            lines += [f"## {name}", "", f"Failed after {seconds:.0f} s:", "", "```",
                      tail.strip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
