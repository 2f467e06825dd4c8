"""Find the programs the test bed needs and install the missing ones (Debian/Ubuntu)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from resilient_db_testbed.bed_pg import pg_bindir
from resilient_db_testbed.bed_process import which

__all__ = ["install", "missing_packages", "quiet_new_services", "services"]


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


POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
INIT_D = Path("/etc/init.d")
# policy-rc.d's documented "action forbidden" exit status: Debian's maintainer
# scripts then start no service while the packages install.
_FORBID = "#!/bin/sh\n# written by resilient_db_testbed.bed install; removed after it\nexit 101\n"

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(command, check=False, env=env, timeout=1800, text=True,
                          capture_output=command[0] != "apt-get")


def systemd_running() -> bool:
    """Return True when systemd is the init system (units can be enabled and started)."""
    return Path("/run/systemd/system").is_dir()


def services(run: Runner = _run, *, systemd: bool | None = None) -> tuple[set[str], set[str]]:
    """Return the (enabled, running) system services: systemd units, or SysV init scripts."""
    if systemd if systemd is not None else systemd_running():
        enabled = run(["systemctl", "list-unit-files", "--type=service", "--state=enabled",
                       "--no-legend", "--plain"])
        active = run(["systemctl", "list-units", "--type=service", "--state=active",
                      "--no-legend", "--plain"])
        return _first_words(enabled.stdout), _first_words(active.stdout)
    scripts = {p.name for p in INIT_D.iterdir()} if INIT_D.is_dir() else set()
    # Without systemd a script in /etc/init.d is "enabled" through rc?.d links;
    # whether it runs is its own "status" (not asked here: the install forbids
    # starts, and stop is run on each new script anyway).
    return scripts, set()


def _first_words(text: str | None) -> set[str]:
    return {line.split()[0] for line in (text or "").splitlines() if line.strip()}


def quiet_new_services(
    before: tuple[set[str], set[str]],
    after: tuple[set[str], set[str]],
    run: Runner = _run,
    *,
    systemd: bool | None = None,
) -> list[str]:
    """Disable and stop the services the install enabled or started; return their names.

    Only what was not there before is touched: a database server the machine
    already ran for someone else stays as it was.
    """
    new = sorted((after[0] - before[0]) | (after[1] - before[1]))
    for name in new:
        if systemd if systemd is not None else systemd_running():
            run(["systemctl", "disable", "--now", name])
        else:
            run(["update-rc.d", name, "disable"])
            run([str(INIT_D / name), "stop"])
    return new


def install(run: Runner = _run) -> int:
    """Install what is missing with apt-get when root, else print what to install.

    The bed runs its own servers on its own ports; the system services the
    packages bring (PostgreSQL, PgBouncer, MariaDB, Redis) are never left
    enabled or running: starts are forbidden while the packages install
    (policy-rc.d, unless the machine has one), and afterwards every service
    that is new is disabled and stopped. Both lists are printed.
    """
    missing = missing_packages(build=True)
    if not missing:
        print("everything the test bed needs is installed")
        return 0
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("missing: " + ", ".join(missing))
        print("install them with: sudo " + " ".join(command))
        return 1
    before = services(run)
    wrote_policy = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text(_FORBID, encoding="utf-8")
        POLICY_RC_D.chmod(0o755)
        wrote_policy = True
    try:
        run(["apt-get", "update"])
        done = run(command)
    finally:
        if wrote_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    quieted = quiet_new_services(before, services(run), run)
    if quieted:
        print("disabled and stopped the system services the packages brought: "
              + ", ".join(quieted))
    if done.returncode != 0:
        return done.returncode
    still = missing_packages(build=True)
    if still:
        print("still missing after apt-get: " + ", ".join(still))
        return 1
    print("installed: " + ", ".join(missing))
    return 0
