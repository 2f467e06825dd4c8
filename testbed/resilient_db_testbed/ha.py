"""Start, stop and inspect the bed's high-availability clusters (opt-in).

``python -m resilient_db_testbed.ha up|down|status|install`` (``up --only
patroni|galera`` brings one cluster). The ordinary bed (``python -m
resilient_db_testbed.bed up``) never starts them, so the default test run does
not pay for them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from collections.abc import Sequence

from resilient_db_testbed.bed_config import BedError
from resilient_db_testbed.bed_process import command_line, which
from resilient_db_testbed.ha_config import MEMBERS, NODES, ha_config
from resilient_db_testbed.ha_galera import GaleraCluster, galera_provider
from resilient_db_testbed.ha_patroni import PatroniCluster, ensure_patroni_venv

__all__ = ["down", "install", "main", "missing_packages", "status", "up"]

CLUSTERS = ("patroni", "galera")
#: System units Debian's packages enable and start; the bed runs its own processes.
_UNITS = ("etcd",)


def missing_packages() -> list[str]:
    """Return the Debian packages the HA clusters need and that are missing."""
    missing: list[str] = []
    if which("etcd") is None:
        missing.append("etcd-server")
    if which("etcdctl") is None:
        missing.append("etcd-client")
    if galera_provider() is None:
        missing.append("galera-4")
    if which("rsync") is None:
        missing.append("rsync")  # Galera's state transfer
    if which("lsof", "ss") is None:
        missing.append("iproute2")  # wsrep_sst_rsync looks for its listener with ss
    if which("python3") is None or not os.path.isfile("/usr/bin/python3"):
        missing.append("python3-venv")
    return missing


def _quiet_units() -> list[str]:
    """Stop and disable the system units the packages enabled; return what was changed."""
    # Only systemctl, which acts on its own unit: a SysV "service etcd stop"
    # stops every etcd process of the machine, the bed's included.
    changed: list[str] = []
    systemctl = shutil.which("systemctl")
    for unit in _UNITS:
        if systemctl is not None:
            for verb in ("stop", "disable"):
                done = subprocess.run(
                    [systemctl, verb, unit], capture_output=True, text=True, timeout=60, check=False
                )
                if done.returncode == 0:
                    changed.append(f"{verb} {unit}")
    return changed


def install() -> int:
    """Install the missing packages (as root), then stop and disable their system units."""
    missing = missing_packages()
    if missing:
        command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            print("missing: " + ", ".join(missing))
            print("install them with: sudo " + " ".join(command))
            return 1
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=False, env=env, timeout=600)
        done = subprocess.run(command, check=False, env=env, timeout=1800)
        if done.returncode != 0:
            return done.returncode
    if os.geteuid() == 0:
        for change in _quiet_units():
            print(f"system unit: {change}")
    still = missing_packages()
    if still:
        print("still missing: " + ", ".join(still))
        return 1
    ensure_patroni_venv(ha_config())
    print("everything the HA clusters need is installed")
    return 0


def up(only: Sequence[str] = CLUSTERS) -> None:
    """Bring the named clusters up (idempotent; every wait bounded)."""
    missing = missing_packages()
    if missing:
        raise BedError(
            "missing programs for the HA clusters: " + ", ".join(missing)
            + "\nrun: python -m resilient_db_testbed.ha install"
        )
    cfg = ha_config()
    if "patroni" in only:
        PatroniCluster(cfg).up()
    if "galera" in only:
        GaleraCluster(cfg).up()


def down(*, keep: bool = False) -> None:
    """Stop both clusters; remove their data unless ``keep``."""
    cfg = ha_config()
    PatroniCluster(cfg).down()
    GaleraCluster(cfg).down()
    if not keep and cfg.root.exists():
        shutil.rmtree(cfg.root)


def status() -> list[str]:
    """Return one line per process of the two clusters."""
    cfg = ha_config()
    patroni = PatroniCluster(cfg)
    galera = GaleraCluster(cfg)
    roles = {m.get("name"): m for m in patroni.topology().get("members", [])}
    lines = [f"{'etcd':<10} {cfg.host}:{cfg.etcd_client_port:<6} {'dcs':<12} "
             f"{'running' if patroni.etcd.running() else 'stopped'}"]
    for name in MEMBERS:
        member = patroni.member(name)
        info = roles.get(name, {})
        lines.append(
            f"{name:<10} {cfg.host}:{member.port:<6} {info.get('role', '-'):<12} "
            f"{info.get('state', 'stopped')} (REST {member.rest_port})"
        )
    for name in NODES:
        node = galera.node(name)
        s = node.status() if node.running() else {}
        lines.append(
            f"{name:<10} {cfg.host}:{node.port:<6} {s.get('wsrep_cluster_status', '-'):<12} "
            f"{s.get('wsrep_local_state_comment', 'stopped')}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(prog="python -m resilient_db_testbed.ha")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start the Patroni and Galera clusters")
    up_parser.add_argument("--only", choices=CLUSTERS, action="append", help="one cluster only")
    down_parser = sub.add_parser("down", help="stop both clusters and remove their data")
    down_parser.add_argument("--keep", action="store_true", help="keep the data directories")
    sub.add_parser("status", help="one line per member and node")
    sub.add_parser("install", help="install etcd and Galera (apt-get, as root), Patroni (pip)")
    args = parser.parse_args(argv)
    if args.command == "install":
        return install()
    if args.command == "down":
        down(keep=args.keep)
        print("HA clusters down" + (" (data kept)" if args.keep else ""))
        return 0
    if args.command == "up":
        started = time.monotonic()
        up(args.only or CLUSTERS)
        print(f"HA clusters up in {time.monotonic() - started:.1f} s ({ha_config().root})")
    for line in status():
        print(line)
    return 0


if __name__ == "__main__":
    command_line(main)
