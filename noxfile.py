"""Test, lint, type and docs sessions.

The test matrix is built from a map of the Python versions each Django
version supports; a pair that cannot exist is a visible skip, never a silent
pass. Interpreters installed with pyenv are found without manual steps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

HERE = Path(__file__).resolve().parent

# Make every pyenv interpreter visible to nox (and to uv) without a shim set-up.
_pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
_extra_bins = sorted(str(p) for p in (_pyenv_root / "versions").glob("3.*/bin") if p.is_dir())
if _extra_bins:
    os.environ["PATH"] = os.pathsep.join([*reversed(_extra_bins), os.environ.get("PATH", "")])
# uv must never try to download an interpreter: only registries are reachable.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False
nox.options.sessions = ["lint", "types", "tests"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Django version -> the Python versions it supports.
DJANGO_PYTHONS: dict[str, tuple[str, ...]] = {
    "5.2": ("3.10", "3.11", "3.12", "3.13"),
    "6.0": ("3.12", "3.13"),
    "6.1": ("3.12", "3.13"),
}
DJANGO_SPEC = {"5.2": "django>=5.2,<5.3", "6.0": "django>=6.0,<6.1", "6.1": "django>=6.1,<6.2"}
# Django uses psycopg 3 whenever it is importable, so the psycopg3 cells may
# also carry psycopg2 (the classifier's tables need both drivers' exception
# classes), while the psycopg2 cell must not have psycopg 3 at all.
DRIVERS = {
    "psycopg3": ["psycopg[binary,pool]>=3.1.8", "psycopg2-binary>=2.9.5"],
    "psycopg2": ["psycopg2-binary>=2.9.5"],
}
TEST_DEPS = [
    "pytest>=8",
    "pytest-django>=4.9",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "redis>=5",
    "mysqlclient>=2.2",
    "PyMySQL>=1.1",
    "django-environ>=0.11",
    "gunicorn>=22",
    "prometheus-client>=0.17",
    "django-health-check>=4",
    "celery>=5.3",
    # tests/test_packaging.py builds the wheel (with uv when on PATH, else with this).
    "build>=1.2",
]
TEST_ENV = {"PYTHONDEVMODE": "1", "PYTHONWARNINGS": "error::DeprecationWarning,error::ResourceWarning"}
# The test bed and fault injection: a development-only package of the repository,
# outside src/ so the wheel never ships it. Sessions that start servers install it.
TESTBED = str(HERE / "testbed")


def _install_system_packages(session: nox.Session) -> None:
    """Install the servers and client libraries the bed and mysqlclient need.

    Runs before anything is installed: the bed's package needs only the standard
    library, so it is imported from the checkout.
    """
    session.run(
        sys.executable,
        "-m",
        "resilient_db_testbed.bed",
        "install",
        env={"PYTHONPATH": TESTBED},
        external=True,
    )


def _run_tests(session: nox.Session, django: str, driver: str) -> None:
    if session.python not in DJANGO_PYTHONS[django]:
        session.skip(f"Django {django} does not support Python {session.python}")
    _install_system_packages(session)
    # A wheel, not an editable install: a file missing from the package
    # (py.typed, a sub-package) then fails here rather than for a user.
    session.install(".", TESTBED, DJANGO_SPEC[django], *DRIVERS[driver], *TEST_DEPS)
    session.run("python", "-m", "django", "--version")
    session.run(
        "python", "-c",
        "from django.db.backends.postgresql.psycopg_any import is_psycopg3;"
        "print('Django PostgreSQL driver:', 'psycopg 3' if is_psycopg3 else 'psycopg2')",
    )
    session.run("pytest", *(session.posargs or ["tests"]), env=TEST_ENV)


@nox.session(python=PYTHONS, tags=["tests"])
@nox.parametrize("driver", list(DRIVERS))
@nox.parametrize("django", list(DJANGO_PYTHONS))
def tests(session: nox.Session, django: str, driver: str) -> None:
    """Run the test suite for one (Python, Django, PostgreSQL driver) cell."""
    _run_tests(session, django, driver)


@nox.session(python="3.11")
def example(session: nox.Session) -> None:
    """Run the example project's smoke tests."""
    _install_system_packages(session)
    session.install(".[psycopg,mysqlclient,environ]", TESTBED, *TEST_DEPS)
    session.run("pytest", "-c", "example_project/pytest.ini", "example_project", env=TEST_ENV)


@nox.session(python="3.11")
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel, check them, install the wheel fresh and run the example.

    The wheel is built from the sdist (``python -m build`` does that), so a
    file missing from either fails here. It is installed into a new virtualenv
    outside the checkout, and the example project's ``manage.py check`` and
    ``dbhealth`` run on SQLite with that install, as a new user's project would.
    """
    session.install("build>=1.2", "twine>=5.1", "uv>=0.4")
    tmp = Path(session.create_tmp())
    dist = tmp / "dist"
    for old in dist.glob("*"):
        old.unlink()
    session.run("python", "-m", "build", "--outdir", str(dist), str(HERE))
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        session.error(f"expected one sdist and one wheel in {dist}, found {sorted(dist.iterdir())}")
    session.run("twine", "check", "--strict", str(sdists[0]), str(wheels[0]))

    venv = tmp / "fresh"
    session.run("uv", "venv", "--quiet", "--clear", "--python", str(session.python), str(venv))
    python = str(venv / ("Scripts" if sys.platform == "win32" else "bin") / "python")
    # The example project's needs: the wheel with its environ extra (the settings
    # read the environment with django-environ), nothing from the checkout.
    session.run(
        "uv", "pip", "install", "--quiet", "--python", python, f"{wheels[0]}[environ]",
    )
    env = {"SHOP_DB": "sqlite", "PYTHONPATH": "", "DJANGO_SETTINGS_MODULE": "shop.settings"}
    manage = str(HERE / "example_project" / "manage.py")
    session.run(
        python, "-c",
        "import resilient_db, sys; p = resilient_db.__file__; print('resilient_db from', p);"
        f" sys.exit(p.startswith({str(HERE / 'src')!r}))",
        env=env, external=True,
    )
    session.run(python, manage, "check", env=env, external=True)
    session.run(python, manage, "dbhealth", env=env, external=True)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Run ruff."""
    session.install("ruff>=0.6")
    session.run(
        "ruff", "check", "src", "testbed", "tests", "example_project", "benchmarks", "noxfile.py",
    )


@nox.session(python="3.11")
def types(session: nox.Session) -> None:
    """Run mypy --strict with django-stubs."""
    _install_system_packages(session)
    session.install(
        ".", "django>=5.2,<5.3", "mypy>=1.11", "django-stubs>=5.2,<5.3",
        "psycopg[binary,pool]", "mysqlclient", "redis", "pytest", "pytest-django", "hypothesis",
        "django-environ", "prometheus-client", "django-health-check", "celery",
    )
    session.run("mypy", "--strict")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation strictly (a broken link or missing page fails)."""
    session.install("mkdocs>=1.6", "mkdocs-material>=9.5")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", str(Path(session.create_tmp()) / "site"),
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Run the main job: the example project (migrate, dbhealth), then the live failure demo."""
    _install_system_packages(session)
    session.install(".[psycopg,mysqlclient,environ,redis]", TESTBED, "gunicorn>=22")
    session.run("python", "example_project/run.py", "demo", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Run the benchmarks (real servers; not part of the test suite)."""
    _install_system_packages(session)
    session.install(".[psycopg,mysqlclient,redis]", TESTBED, "psycopg2-binary", *TEST_DEPS)
    # run_all.py runs every bench_*.py and writes docs/benchmarks.md.
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session(python="3.11")
def chaos(session: nox.Session) -> None:
    """Run the long chaos soak: several processes sharing the Redis-backed registry."""
    _install_system_packages(session)
    session.install(".", TESTBED, "django>=5.2,<5.3", "psycopg[binary]", *TEST_DEPS)
    env = {
        **TEST_ENV,
        "RESILIENT_DB_CHAOS_SECONDS": os.environ.get("RESILIENT_DB_CHAOS_SECONDS", "600"),
        "RESILIENT_DB_CHAOS_PROCESSES": os.environ.get("RESILIENT_DB_CHAOS_PROCESSES", "3"),
    }
    session.run("pytest", "tests/chaos", "-m", "slow", *session.posargs, env=env)


@nox.session(python="3.11")
@nox.parametrize("driver", list(DRIVERS))
def ha(session: nox.Session, driver: str) -> None:
    """Bring the HA clusters up (Patroni, Galera), run tests/ha against them, take them down.

    Extra arguments replace the test path: ``ci`` runs every HA test with
    psycopg 3 and only the Patroni ones with psycopg2 (the Galera tests do not
    use the PostgreSQL driver).
    """
    _install_system_packages(session)
    session.run(
        sys.executable, "-m", "resilient_db_testbed.ha", "install",
        env={"PYTHONPATH": TESTBED}, external=True,
    )
    session.install(".", TESTBED, "django>=5.2,<5.3", *DRIVERS[driver], *TEST_DEPS)
    env = {**TEST_ENV, "RESILIENT_DB_HA": "1"}
    # Only the clusters the chosen tests use.
    args = session.posargs or ["tests/ha"]
    paths = [a for a in args if a.startswith("tests/") and "::" not in a]
    only = [f"--only={name}" for name in ("patroni", "galera")
            if paths and all(name in path for path in paths)]
    session.run("python", "-m", "resilient_db_testbed.ha", "up", *only, env=env)
    try:
        session.run("pytest", *args, "-m", "ha", env=env)
    finally:
        session.run("python", "-m", "resilient_db_testbed.ha", "down", env=env)


# Django's own test suite, run with Django's engines and with ours (the gate
# of tests/django_suite/gate.py): vendor -> the drivers to install.
SUITE_DRIVERS = {
    "psycopg3": ("postgresql", ["psycopg[binary,pool]>=3.1.8"]),
    "psycopg2": ("postgresql", ["psycopg2-binary>=2.9.5"]),
    # psycopg too: the bed sets up its PostgreSQL servers with it.
    "mysqlclient": ("mysql", ["mysqlclient>=2.2", "psycopg[binary]>=3.1.8"]),
}
# What Django's suite needs for the labels the gate runs (tblib: the parallel
# runner reports failures with tracebacks).
SUITE_DEPS = ["tblib>=1.5", "numpy", "Pillow>=6.2.1", "PyYAML", "redis>=5"]


@nox.session(python=PYTHONS, tags=["django_suite"])
@nox.parametrize("driver", list(SUITE_DRIVERS))
@nox.parametrize("django", list(DJANGO_PYTHONS))
def django_suite(session: nox.Session, django: str, driver: str) -> None:
    """Run Django's own test suite with Django's engine and ours; fail on any regression.

    Extra arguments go to the gate: `-- --labels transactions` runs one label,
    `-- --modes plain` only the run without RESILIENT_DB.
    """
    if session.python not in DJANGO_PYTHONS[django]:
        session.skip(f"Django {django} does not support Python {session.python}")
    vendor, drivers = SUITE_DRIVERS[driver]
    _install_system_packages(session)
    session.install(".", TESTBED, DJANGO_SPEC[django], *drivers, *SUITE_DEPS)
    session.run("python", "-m", "django", "--version")
    session.run(
        "python", "tests/django_suite/gate.py", "--vendor", vendor,
        "--cache", str(HERE / ".nox" / "_django_suite"), *session.posargs,
    )


# The cells that must run on every change; `ci` runs exactly these, each
# with its pytest arguments. The first cell runs everything; the others run
# what their difference (the driver, Django's version) can change, so that a
# whole CI run stays within its time budget: the timing-bound scenarios
# (marked slow, the chaos soak among them) run once, and MariaDB and Redis
# do not depend on the PostgreSQL driver.
CI_CELLS = [
    ("3.11", "5.2", "psycopg3", ["tests"]),
    ("3.11", "5.2", "psycopg2", ["tests", "-m", "not slow and not mariadb and not redis"]),
    ("3.12", "6.1", "psycopg3", ["tests", "-m", "not slow"]),
]


# Django's suite in CI: the features run where it finds the most (the
# psycopg 3 and MariaDB cells); the other cells compare without RESILIENT_DB.
# The psycopg2 cell runs the labels where the driver makes a difference (its
# connections, transactions, errors and adapters); the SQL the ORM writes is
# the same with either driver, and the psycopg 3 cell runs every label.
PSYCOPG2_LABELS = [
    "backends", "transactions", "transaction_hooks", "select_for_update", "queries", "basic",
    "test_utils", "model_fields", "cache", "get_or_create", "bulk_create", "postgres_tests",
]
SUITE_CELLS = [
    ("3.11", "5.2", "psycopg3", ["--modes", "plain,features"]),
    ("3.11", "5.2", "psycopg2", ["--modes", "plain", "--labels", *PSYCOPG2_LABELS]),
    ("3.11", "5.2", "mysqlclient", ["--modes", "plain,features"]),
    ("3.12", "6.1", "psycopg3", ["--modes", "plain"]),
]


@nox.session(python=False)
def ci(session: nox.Session) -> None:
    """Run everything CI checks: lint, types, docs, the required cells, Django's suite, the HA clusters, the example, the package."""
    session.notify("lint")
    session.notify("types")
    session.notify("docs")
    for python, django, driver, args in CI_CELLS:
        session.notify(f"tests-{python}(django='{django}', driver='{driver}')", args)
    for python, django, driver, gate_args in SUITE_CELLS:
        session.notify(f"django_suite-{python}(django='{django}', driver='{driver}')", gate_args)
    # The HA clusters (issue: leader changes and Galera nodes): every test on
    # psycopg 3, ours on Patroni again on psycopg2 (stock Django's run there
    # measures Django, not us).
    session.notify("ha(driver='psycopg3')")
    session.notify(
        "ha(driver='psycopg2')",
        ["tests/ha/test_patroni.py", "--deselect", "tests/ha/test_patroni.py::test_leader_killed_stock_django_libpq_multi_host"],
    )
    session.notify("example")
    session.notify("package")
