"""Find the programs the test bed needs and install the missing ones (Debian/Ubuntu)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from resilient_db.testing.bed_pg import pg_bindir
from resilient_db.testing.bed_process import which

__all__ = ["install", "missing_packages"]


def _has_mariadb_headers() -> bool:
    return shutil.which("mariadb_config") is not None or Path("/usr/include/mariadb/mysql.h").is_file()


def missing_packages(*, build: bool = False) -> list[str]:
    """Return the Debian packages providing the missing programs (``build``: also headers)."""
    missing: list[str] = []
    if pg_bindir() is None:
        missing.append("postgresql")
    if which("pgbouncer") is None:
        missing.append("pgbouncer")
    if which("mariadbd", "mysqld") is None or which("mariadb-install-db", "mysql_install_db") is None:
        missing.append("mariadb-server")
    if which("mariadb", "mysql") is None:
        missing.append("mariadb-client")
    if which("redis-server") is None:
        missing.append("redis-server")
    if build:
        if not _has_mariadb_headers():
            missing.append("libmariadb-dev")
        if which("pkg-config") is None:
            missing.append("pkg-config")
    return missing


def install() -> int:
    """Install what is missing with apt-get when root, else print what to install."""
    missing = missing_packages(build=True)
    if not missing:
        print("everything the test bed needs is installed")
        return 0
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("missing: " + ", ".join(missing))
        print("install them with: sudo " + " ".join(command))
        return 1
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Debian starts freshly installed services; the bed never uses them, but a policy file
    # keeping them stopped would be outside this project's business, so they are left be.
    subprocess.run(["apt-get", "update"], check=False, env=env, timeout=600)
    done = subprocess.run(command, check=False, env=env, timeout=1800)
    if done.returncode != 0:
        return done.returncode
    still = missing_packages(build=True)
    if still:
        print("still missing after apt-get: " + ", ".join(still))
        return 1
    print("installed: " + ", ".join(missing))
    return 0
