"""Run Django's own test suite with Django's engine and with ours; fail on any difference.

Usage (the ``django_suite`` nox session runs it)::

    python tests/django_suite/gate.py --vendor postgresql [--labels backends transactions]

The suite is the one of the installed Django version, taken from that exact
version's sdist on the package index (it ships ``tests/`` and ``runtests.py``).
It runs once with Django's stock ENGINE, once with ours and no ``RESILIENT_DB``
(what a new user does first), and once with ours and the resilience features
on, all against the test bed's servers on their own test databases. Per test,
an outcome of ours that is worse than stock's is REGRESSED, better is FIXED, a
test that stock ran and ours did not is MISSING. Any REGRESSED or MISSING test
that is not on the reviewed list in ``expected.py`` fails the gate.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The repository's test bed package (testbed/, development only, not in the wheel) gives
# the bed's servers, here and in the suite's children (suite_settings.py reads its ports).
TESTBED = HERE.parent.parent / "testbed"
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(TESTBED))

from expected import EXPECTED  # noqa: E402 - the gate's own directory, added just above
from suite_runner import PASSED  # noqa: E402

#: The labels every cell runs; ``postgres_tests`` only on PostgreSQL.
LABELS = (
    "backends",
    "transactions",
    "transaction_hooks",
    "select_for_update",
    "queries",
    "basic",
    "test_utils",
    "model_fields",
    "migrations",
    "schema",
    "db_functions",
    "expressions",
    "aggregation",
    "cache",
    "get_or_create",
    "update",
    "delete",
    "bulk_create",
    "model_forms",
    "custom_lookups",
    "fixtures",
    "prefetch_related",
    "ordering",
    "lookup",
)
VENDOR_LABELS = {"postgresql": ("postgres_tests",), "mysql": ()}

#: Vendors whose suite runs in one process, and why.
SERIAL = {
    "mysql": (
        "Django clones MySQL test databases for parallel runs with the mysqldump and mysql "
        "programs, whose sessions write the binary log; the bed's replica then meets tables "
        "of databases it never saw and stops replicating. In one process every session of "
        "the suite has sql_log_bin = 0 (suite_settings.py) and the replica is untouched."
    ),
}

#: mode -> (engine, features): the stock baseline first.
MODES = {"stock": ("stock", False), "plain": ("ours", False), "features": ("ours", True)}

#: The package index's simple API.
INDEX = os.environ.get("RDB_SUITE_INDEX", "https://pypi.org/simple")

#: No run of Django's suite may hang CI: each is cut off after this long.
RUN_TIMEOUT = 25 * 60


@dataclass
class Comparison:
    """How the outcomes of one mode differ from stock's, per label."""

    mode: str
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    regressed: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    expected: list[tuple[str, str]] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)


def label_of(test_id: str) -> str:
    """Return the suite label (top-level test package) of ``test_id``."""
    # "setUpClass (backends.tests.Foo)" for errors outside a test method.
    if " (" in test_id:
        test_id = test_id.split(" (", 1)[1].rstrip(")")
    return test_id.split(".", 1)[0]


def compare(
    mode: str, stock: dict[str, str], ours: dict[str, str], vendor: str, expected: dict[str, str]
) -> Comparison:
    """Compare the per-test outcomes of ``ours`` with ``stock``."""
    result = Comparison(mode)
    for test_id in sorted(set(stock) | set(ours)):
        label = label_of(test_id)
        counts = result.counts.setdefault(label, Counter())
        before, after = stock.get(test_id), ours.get(test_id)
        counts["tests"] += 1
        if before is not None and after is None:
            # An error entry such as "setUpClass (cache.tests.Foo)" exists only
            # where the class failed: gone in ours, it is fixed, not missing.
            kind = "missing" if before in PASSED else "fixed"
        elif before in PASSED and after not in PASSED:
            kind = "regressed"
        elif before not in PASSED and after in PASSED:
            kind = "fixed"
        else:
            continue
        counts[kind] += 1
        reason = expected.get(test_id)
        if kind == "fixed":
            result.fixed.append(test_id)
        elif reason is not None:
            counts["expected"] += 1
            result.expected.append((test_id, reason))
        elif kind == "missing":
            result.missing.append(test_id)
        else:
            result.regressed.append((test_id, str(before), str(after)))
    return result


def render(comparison: Comparison) -> str:
    """Return the table of one comparison, one row per label."""
    lines = [
        f"{'label':<22} {'tests':>6} {'regressed':>9} {'fixed':>6} {'missing':>7} {'expected':>8}",
    ]
    total: Counter[str] = Counter()
    for label in sorted(comparison.counts):
        c = comparison.counts[label]
        total.update(c)
        lines.append(
            f"{label:<22} {c['tests']:>6} {c['regressed']:>9} {c['fixed']:>6} "
            f"{c['missing']:>7} {c['expected']:>8}"
        )
    lines.append(
        f"{'TOTAL':<22} {total['tests']:>6} {total['regressed']:>9} {total['fixed']:>6} "
        f"{total['missing']:>7} {total['expected']:>8}"
    )
    for test_id, before, after in comparison.regressed:
        lines.append(f"REGRESSED {test_id}: {before} with stock, {after} with ours")
    lines.extend(f"MISSING   {test_id}" for test_id in comparison.missing)
    lines.extend(f"FIXED     {test_id}" for test_id in comparison.fixed)
    lines.extend(f"expected  {test_id}: {reason}" for test_id, reason in comparison.expected)
    return "\n".join(lines)


def fetch_suite(version: str, cache: Path) -> Path:
    """Return the ``tests`` directory of Django ``version``'s sdist, downloading it once."""
    tests = cache / f"django-{version}" / "tests"
    if (tests / "runtests.py").is_file():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    # The index's simple API (PEP 691, JSON): what pip itself reads.
    request = urllib.request.Request(
        f"{INDEX}/django/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        files = json.load(r)["files"]
    wanted = f"django-{version}.tar.gz"
    (sdist,) = [f for f in files if f["filename"].lower() == wanted]
    archive = cache / sdist["filename"]
    with urllib.request.urlopen(sdist["url"], timeout=300) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != sdist["hashes"]["sha256"]:
        raise SystemExit(f"{sdist['filename']}: sha256 does not match the package index")
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name or m.name.endswith("/tests")]
        tar.extractall(cache, members=members, filter="data")
    archive.unlink()
    root = next(cache.glob(f"[dD]jango-{version}"))
    if root.name != f"django-{version}":
        root.rename(cache / f"django-{version}")
    return tests


def run_suite(
    tests: Path, mode: str, vendor: str, labels: Sequence[str], parallel: int, out: Path
) -> dict[str, str]:
    """Run Django's suite in ``mode``; return ``{test id: outcome}``."""
    engine, features = MODES[mode]
    results = out / f"{vendor}-{mode}.json"
    log = out / f"{vendor}-{mode}.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE), str(TESTBED), os.environ.get("PYTHONPATH")])
        ),
        "RDB_SUITE_VENDOR": vendor,
        "RDB_SUITE_ENGINE": engine,
        "RDB_SUITE_FEATURES": "1" if features else "0",
        "RDB_SUITE_RUN": mode,
        "RDB_SUITE_RESULTS": str(results),
        # Django's suite is not ours: its deprecation warnings are not errors here.
        "PYTHONWARNINGS": "",
    }
    env.pop("PYTHONDEVMODE", None)
    command = [
        sys.executable, "runtests.py", "--settings", "suite_settings", "--noinput",
        f"--parallel={parallel}", *labels,
    ]
    began = time.monotonic()
    with log.open("w") as sink:
        proc = subprocess.run(
            command, cwd=tests, env=env, stdout=sink, stderr=subprocess.STDOUT,
            timeout=RUN_TIMEOUT, check=False,
        )
    took = time.monotonic() - began
    tail = log.read_text(errors="replace").splitlines()
    summary = [line for line in tail if line.startswith(("Ran ", "OK", "FAILED"))]
    print(f"[{vendor}/{mode}] {' '.join(summary) or 'no summary'} in {took:.0f} s (exit {proc.returncode})")
    if not results.is_file():
        print("\n".join(tail[-40:]))
        raise SystemExit(f"[{vendor}/{mode}] Django's suite wrote no results; see above")
    outcomes: dict[str, str] = json.loads(results.read_text())
    return outcomes


@contextlib.contextmanager
def bed_running(vendor: str) -> Iterator[None]:
    """Start the test bed unless it runs; stop it afterwards if it was started here."""
    from resilient_db_testbed import bed

    cold = not any(s.running for s in bed.status())
    if not bed.is_up():
        bed.up()
    try:
        yield
    finally:
        if cold and not os.environ.get("RESILIENT_DB_BED_KEEP"):
            bed.down()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gate; return the exit status (0 when nothing unexpected differs)."""
    import django

    from resilient_db_testbed.bed import server as bed_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--vendor", choices=sorted(VENDOR_LABELS), default="postgresql")
    parser.add_argument("--labels", nargs="*", help="Django test labels (default: the gate's set)")
    parser.add_argument("--modes", default="plain,features", help="modes of ours to compare")
    parser.add_argument(
        "--parallel", type=int, default=None,
        help="test processes (default: one per CPU on PostgreSQL, 1 on MySQL: see SERIAL)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="where the suite is unpacked")
    parser.add_argument("--out", type=Path, default=None, help="where logs and results go")
    args = parser.parse_args(argv)

    if args.parallel is None:
        args.parallel = 1 if args.vendor in SERIAL else os.cpu_count() or 1
    elif args.parallel > 1 and args.vendor in SERIAL:
        parser.error(f"--parallel must be 1 on {args.vendor}: {SERIAL[args.vendor]}")
    version = django.get_version()
    cache = args.cache or Path(tempfile.gettempdir()) / "resilient-db-django-suite"
    out = args.out or cache / "runs"
    out.mkdir(parents=True, exist_ok=True)
    labels = args.labels or [*LABELS, *VENDOR_LABELS[args.vendor]]
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES) | ({"stock"} & set(modes))
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}; choose from plain, features")
    driver = args.vendor
    if args.vendor == "postgresql":
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        driver = "PostgreSQL with psycopg 3" if is_psycopg3 else "PostgreSQL with psycopg2"
    print(f"Django {version}, {driver}, labels: {' '.join(labels)}")
    tests = fetch_suite(version, cache)
    expected = {k: v for k, v in EXPECTED.items() if _applies(k, args.vendor)}
    expected = {k.split(":", 1)[-1]: v for k, v in expected.items()}
    failed = False
    with bed_running(args.vendor):
        stock = run_suite(tests, "stock", args.vendor, labels, args.parallel, out)
        for mode in modes:
            ours = run_suite(tests, mode, args.vendor, labels, args.parallel, out)
            comparison = compare(mode, stock, ours, args.vendor, expected)
            print(f"\n== {args.vendor}, ours ({mode}) against stock, Django {version} ==")
            print(render(comparison))
            if comparison.regressed or comparison.missing:
                failed = True
        for name in ("pg_replica", "maria_replica"):
            # The suite must leave the bed as it found it for whatever runs next.
            if not bed_server(name).healthy():
                print(f"django_suite: the bed's {name} stopped replicating during the runs")
                failed = True
    print(f"\ndjango_suite: {'FAILED' if failed else 'passed'} ({args.vendor}, Django {version})")
    return 1 if failed else 0


def _applies(key: str, vendor: str) -> bool:
    prefix, sep, _ = key.partition(":")
    return not sep or prefix == vendor


if __name__ == "__main__":
    raise SystemExit(main())
