"""The package metadata says what CI tests, and CI builds and installs what users install."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, when installed
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
TESTBED = ROOT / "testbed" / "resilient_db_testbed"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _noxfile_constant(name: str) -> Any:
    """Return a literal assigned at the top of noxfile.py (nox itself need not be installed)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:  # type: ignore[attr-defined]
            return ast.literal_eval(node.value)  # type: ignore[attr-defined]
    raise LookupError(name)


def test_classifiers_list_every_django_and_python_ci_tests() -> None:
    classifiers = set(_pyproject()["project"]["classifiers"])
    djangos = _noxfile_constant("DJANGO_PYTHONS")
    pythons = _noxfile_constant("PYTHONS")
    missing = [f"Framework :: Django :: {v}" for v in djangos] + [
        f"Programming Language :: Python :: {v}" for v in pythons
    ]
    assert [c for c in missing if c not in classifiers] == []
    # And nothing CI does not test.
    listed = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith("Framework :: Django :: ")}
    assert listed == set(djangos)


def test_ci_builds_and_installs_the_package() -> None:
    text = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    sessions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "package" in sessions
    ci = ast.get_source_segment(text, sessions["ci"])
    assert ci is not None and 'session.notify("package")' in ci
    package = ast.get_source_segment(text, sessions["package"])
    assert package is not None
    for step in ("twine", "check", "manage.py", ".whl"):
        assert step in package, step



@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel a user installs: ``RESILIENT_DB_WHEEL`` if set, else built here from the sdist."""
    given = os.environ.get("RESILIENT_DB_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is not None:
        # Without --wheel, uv builds the sdist and the wheel from it, as `python -m build` does.
        command = [uv, "build", "--quiet", "--python", sys.executable, "--out-dir", str(out), str(ROOT)]
    elif importlib.util.find_spec("build") is not None:
        command = [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)]
    else:
        message = "no build frontend (uv or build) to build the wheel with"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # The build's own tools (pip, setuptools) are not held to the suite's warning rules.
    env = {
        key: value for key, value in os.environ.items()
        if key not in ("PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONPATH")
    }
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _wheel_files(wheel: Path) -> list[str]:
    """List the wheel's files the way a reviewer would: ``python -m zipfile -l``."""
    listing = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    # Each row: the name, then the date, time and size the zipfile module prints after it.
    return re.findall(r"^(\S+)\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+$", listing, re.M)


def test_wheel_ships_no_test_bed(wheel: Path) -> None:
    files = _wheel_files(wheel)
    # The listing was read: the package itself is there.
    assert "resilient_db/__init__.py" in files
    assert "resilient_db/py.typed" in files
    bed_modules = {p.name for p in TESTBED.glob("*.py")} - {"__init__.py"}
    shipped = [
        name for name in files
        if name.startswith(("resilient_db/testing/", "resilient_db_testbed/"))
        or name.rsplit("/", 1)[-1] in bed_modules
    ]
    assert shipped == []
    assert {"bed.py", "faults.py", "proxy.py", "ha_patroni.py"} <= bed_modules  # it looked for them
    # Nothing but the package and its metadata at the top of the wheel.
    tops = {name.split("/", 1)[0] for name in files}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"resilient_db"}
