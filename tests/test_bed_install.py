"""``python -m resilient_db_testbed.bed install`` leaves no system service enabled or running.

apt-get itself is not run here (the machine has the packages already): the
runner is replaced by one that plays Debian's maintainer scripts, enabling
and starting what a package brings unless policy-rc.d forbids starts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from resilient_db_testbed import bed_install


def done(stdout: str = "", code: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, stdout=stdout, stderr="")


class FakeSystem:
    """Debian as far as services go: units, their states, and policy-rc.d."""

    def __init__(self, policy: Path, *, systemd: bool, init_d: Path) -> None:
        self.policy = policy
        self.systemd = systemd
        self.init_d = init_d
        self.enabled = {"postgresql@15-main.service", "ssh.service"}
        self.active = {"postgresql@15-main.service", "ssh.service"}
        self.commands: list[list[str]] = []
        self.policy_during_install: str | None = None

    def __call__(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        if command[:2] == ["apt-get", "install"]:
            self.policy_during_install = (
                self.policy.read_text() if self.policy.exists() else None
            )
            starts_allowed = self.policy_during_install is None
            # pgbouncer's postinst enables its service and starts it.
            if self.systemd:
                self.enabled.add("pgbouncer.service")
                if starts_allowed:
                    self.active.add("pgbouncer.service")
            else:
                (self.init_d / "pgbouncer").write_text("#!/bin/sh\n")
            return done()
        if command[:2] == ["systemctl", "list-unit-files"]:
            return done("".join(f"{u} enabled enabled\n" for u in sorted(self.enabled)))
        if command[:2] == ["systemctl", "list-units"]:
            return done("".join(f"{u} loaded active running x\n" for u in sorted(self.active)))
        if command[:3] == ["systemctl", "disable", "--now"]:
            self.enabled.discard(command[3])
            self.active.discard(command[3])
        return done()


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> FakeSystem:
    systemd = request.param == "systemd"
    init_d = tmp_path / "init.d"
    init_d.mkdir()
    (init_d / "postgresql").write_text("#!/bin/sh\n")
    fake = FakeSystem(tmp_path / "policy-rc.d", systemd=systemd, init_d=init_d)
    monkeypatch.setattr(bed_install, "POLICY_RC_D", fake.policy)
    monkeypatch.setattr(bed_install, "INIT_D", init_d)
    monkeypatch.setattr(bed_install, "systemd_running", lambda: systemd)
    monkeypatch.setattr(bed_install.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bed_install.shutil, "which", lambda name: f"/usr/bin/{name}")
    calls = iter([["pgbouncer"], []])
    monkeypatch.setattr(bed_install, "missing_packages", lambda build=False: next(calls))
    return fake


@pytest.mark.parametrize("system", ["systemd"], indirect=True)
def test_install_leaves_no_new_unit_enabled_or_running(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bed_install.install(run=system) == 0
    # Starts were forbidden while the packages installed, and the policy
    # file written for that is gone again.
    assert system.policy_during_install is not None
    assert "exit 101" in system.policy_during_install
    assert not system.policy.exists()
    assert ["systemctl", "disable", "--now", "pgbouncer.service"] in system.commands
    assert "pgbouncer.service" not in system.enabled | system.active
    # What ran before the install is someone else's: left alone.
    assert "postgresql@15-main.service" in system.active
    assert not any("postgresql@15-main.service" in c for c in system.commands[2:] if
                   c[:2] == ["systemctl", "disable"])
    out = capsys.readouterr().out
    assert "disabled and stopped the system services the packages brought: pgbouncer.service" in out
    assert "installed: pgbouncer" in out


@pytest.mark.parametrize("system", ["sysv"], indirect=True)
def test_install_without_systemd_disables_and_stops_new_init_scripts(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bed_install.install(run=system) == 0
    assert ["update-rc.d", "pgbouncer", "disable"] in system.commands
    assert [str(system.init_d / "pgbouncer"), "stop"] in system.commands
    assert not any(c[:2] == ["update-rc.d", "postgresql"] for c in system.commands)
    assert "services the packages brought: pgbouncer" in capsys.readouterr().out


@pytest.mark.parametrize("system", ["systemd"], indirect=True)
def test_an_existing_policy_file_is_left_as_it_is(system: FakeSystem) -> None:
    system.policy.write_text("#!/bin/sh\nexit 0\n")
    bed_install.install(run=system)
    assert system.policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_services_reads_this_machine() -> None:
    # Whatever the init system here, the reading works and returns names.
    enabled, running = bed_install.services()
    assert all(isinstance(name, str) and name for name in enabled | running)
