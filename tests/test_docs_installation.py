"""docs/installation.md, followed as a new user would: a fresh startproject, the page's blocks.

Every Python block of the page is used here exactly as printed: the settings
block is appended to the project's ``settings.py``, the URLs block replaces its
``urls.py``. Then ``manage.py check``, ``manage.py dbhealth`` and a request to
the health URL run in subprocesses, against the PostgreSQL part of the test
bed (the page's environment variables point there).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_db_testbed.bed_config import BedConfig

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "installation.md"


def python_blocks() -> dict[str, str]:
    """Return the page's Python blocks by their first line (``# settings.py (appended)``)."""
    text = PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return {block.splitlines()[0]: block for block in blocks}


def test_every_python_block_is_run_here() -> None:
    # A block added to the page without a use below fails: nothing printed goes untested.
    assert sorted(python_blocks()) == ["# settings.py (appended)", "# urls.py"]


def test_supported_versions_table_is_what_ci_tests() -> None:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    matrix: dict[str, tuple[str, ...]] | None = None
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "DJANGO_PYTHONS"
            and node.value is not None
        ):
            matrix = ast.literal_eval(node.value)
    assert matrix is not None
    text = PAGE.read_text(encoding="utf-8")
    header = re.search(r"^\| Django \|(.*)\|$", text, re.M)
    assert header is not None
    pythons = [cell.strip().removeprefix("Python ") for cell in header.group(1).split("|")]
    table: dict[str, tuple[str, ...]] = {}
    for line in re.findall(r"^\| (\d\.\d)(?: LTS)? \|(.*)\|$", text, re.M):
        version, cells = line
        marks = [cell.strip() for cell in cells.split("|")]
        table[version] = tuple(p for p, mark in zip(pythons, marks, strict=True) if mark == "yes")
    assert table == matrix


def _env(bed: BedConfig, project: Path) -> dict[str, str]:
    environ = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DB_")) and key != "PYTHONPATH"
    }
    environ.update(
        DB_NAME=bed.pg_db,
        DB_USER=bed.pg_user,
        DB_PASSWORD=bed.pg_password,
        DB_HOST=bed.host,
        DB_PORT=str(bed.pgbouncer_a_port),
        DB_REPLICA_HOST=bed.host,
        DB_REPLICA_PORT=str(bed.pg_replica_port),
        DB_PEER_URL=f"postgres://{bed.host}:{bed.pgbouncer_b_port}",
        PYTHONPATH=str(project),
    )
    return environ


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project made by ``django-admin startproject`` with the page's blocks in it."""
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    blocks = python_blocks()
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text(encoding="utf-8") + "\n" + blocks["# settings.py (appended)"],
        encoding="utf-8",
    )
    (tmp_path / "mysite" / "urls.py").write_text(blocks["# urls.py"], encoding="utf-8")
    return tmp_path


def manage(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=project, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )


def test_the_settings_pass_the_checks_with_the_defaults(project: Path) -> None:
    # As printed, before any environment variable is set: the defaults are
    # names of servers that do not exist here, and check must not need them.
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DB_"))}
    environ["PYTHONPATH"] = str(project)
    proc = manage(project, environ, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "System check identified no issues (0 silenced)." in proc.stdout


@pytest.mark.postgres
def test_first_run_against_real_servers(project: Path, bed: BedConfig) -> None:
    env = _env(bed, project)
    check = manage(project, env, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "System check identified no issues (0 silenced)." in check.stdout

    health = manage(project, env, "dbhealth")
    assert health.returncode == 0, health.stdout + health.stderr
    assert "status: healthy (exit 0), 3 targets probed" in health.stdout
    assert health.stderr == ""
    assert bed.pg_password not in health.stdout

    wait = manage(project, env, "dbhealth", "--wait", "10", "--wait-for", "degraded")
    assert wait.returncode == 0, wait.stdout + wait.stderr

    # The URL include answers; DEBUG is on in a new project, so localhost is allowed.
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/health/db/', HTTP_HOST='localhost');"
        "print(json.dumps({'code': r.status_code, 'body': json.loads(r.content)}))"
    )
    env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["code"] == 200
    assert answer["body"]["status"] == "healthy"
    assert [a["alias"] for a in answer["body"]["aliases"]] == ["default", "replica"]
