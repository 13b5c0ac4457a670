"""labsim's faults on a fresh lab, and the races of parallel `vagrant up`s (moved out of
test_labsim.py)."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from driver import Driver, ops

from labsim.testing import LabHandle, running_lab

# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_faults(tmp_path: Path) -> None:
    faults = [
        "replication:broken",
        "failover:broken",
        "halt:ignored=primary.vm",
        "fail:puppet.agent@linux.vm=2",
        "slow:puppet.infrastructure.status=1500",
    ]
    with running_lab(tmp_path / "lab", faults=faults) as h:
        drv = Driver(h)
        drv.up_all()
        drv.setup_code_manager()
        assert drv.provision()[0] == 0
        # failover:broken: enabling does not add the replica to server_list
        assert drv.agent_server_list() == ["primary.vm:8140"]
        # fail:OP=N fails N times, then works
        results = [drv.ssh("linux.vm", ["puppet", "agent", "-t"])[0] for _ in range(3)]
        assert results[:2] == [1, 1] and results[2] in (0, 2)
        assert len(ops(h.journal(), "puppet.agent", "linux.vm")) == 3
        assert [e["outcome"] for e in ops(h.journal(), "puppet.agent", "linux.vm")][:2] == [
            "fault",
            "fault",
        ]
        # slow: adds SECONDS x time scale
        t0 = time.monotonic()
        drv.ok("primary.vm", ["puppet", "infrastructure", "status"])
        assert time.monotonic() - t0 >= 1.5
        # ... until the fault is cleared: a step slowed by 10 minutes ends once it is
        h.fault_add("slow:puppet.infrastructure.status=600000")
        slowed = ThreadPoolExecutor(1).submit(
            drv.ok, "primary.vm", ["puppet", "infrastructure", "status"]
        )
        time.sleep(0.5)
        assert not slowed.done()
        t0 = time.monotonic()
        h.fault_clear()
        assert "primary.vm" in slowed.result(timeout=30)
        assert time.monotonic() - t0 < 30
        h.fault_add("replication:broken")  # as at the start, for what follows
        # replication:broken: the replica never gets the push
        drv.commit_and_push("broken-1")
        time.sleep(1.0)
        assert (
            "broken-1"
            not in drv.ssh(
                "replica.vm", ["cat", "/etc/puppetlabs/code/environments/production/Puppetfile"]
            )[1]
        )
        # replication:lag (live): code arrives after the lag
        h.fault_clear()
        h.fault_add("replication:lag=1.5")
        t0 = time.monotonic()
        drv.commit_and_push("lag-1")
        drv.wait_for(
            "lagged code",
            lambda: (
                "lag-1"
                in drv.ssh(
                    "replica.vm", ["cat", "/etc/puppetlabs/code/environments/production/Puppetfile"]
                )[1]
            ),
        )
        assert time.monotonic() - t0 >= 1.5
        # replica:unhealthy: as in PE, every service stays running; an error alert says it
        h.fault_add("replica:unhealthy")
        st = json.loads(
            drv.ok("primary.vm", ["puppet", "infrastructure", "status", "--format=json"])
        )
        rep = [e for e in st if e["server"] == "replica.vm"]
        assert rep and all(e["state"] == "running" for e in rep)
        assert [a["severity"] for e in rep for a in e["alerts"]] == ["error"]
        r = drv.http(
            "replica.vm", 8081, "GET", "/status/v1/services/puppetdb-status", cert="replica.vm"
        )
        assert r.status_code == 200 and r.json()["active_alerts"][0]["severity"] == "error"
        h.fault_clear()
        # halt:ignored: vagrant says poweroff, the VM keeps serving (fault was given at up, and
        # cleared above; add it again live)
        h.fault_add("halt:ignored=primary.vm")
        drv.vagrant("halt", "primary.vm")
        assert h.status()["primary.vm"] == "poweroff"
        assert drv.http("primary.vm", 8140, "GET", "/status/v1/simple").text == "running"
        # fail: on an API answers 503
        h.fault_add("fail:api.rbac")
        r = drv.http("primary.vm", 4433, "GET", "/rbac-api/v1/users", token=drv.admin_token)
        assert r.status_code == 503
        assert "fault" in {e["outcome"] for e in ops(h.journal(), "api.rbac")}


def _ups_at_once(h: LabHandle, *vms: str) -> list[tuple[int, str]]:
    """`vagrant up VM` for each of `vms` at once: each one's exit status and stderr."""
    procs = [
        subprocess.Popen(
            ["vagrant", "up", vm],
            env=h.environ(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for vm in vms
    ]
    return [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]


@pytest.mark.slow
def test_parallel_first_vagrant_ups_race_on_the_box_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mrcmn/puppet-upandrun's README brings VMs up one at a time; parallel first runs race on
    # VirtualBox's locks (real-world-findings §1 row 8). Once the box is there, they do not.
    from pe_dr.lab.vagrant import VagrantLab

    with running_lab(tmp_path / "lab") as h:
        drv = Driver(h)
        monkeypatch.setenv("PATH", h.env["PATH"])
        box = VagrantLab(h.state_dir)
        assert box.boxes() == []
        results = _ups_at_once(h, "primary.vm", "gitlab.vm")
        failed = [err for rc, err in results if rc != 0]
        assert len(failed) == 1, results
        assert "locked for reading by another task" in failed[0]
        assert box.boxes() == [("ubuntu/jammy64", "virtualbox")]
        again = drv.vagrant("box", "add", "ubuntu/jammy64", check=False)
        assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.slow
def test_parallel_first_vagrant_ups_duplicate_the_host_only_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first `vagrant up` of a lab creates its host-only interface; parallel first runs each
    # create one, with the same address (real-world-findings §4.2 row 9). The primary alone
    # first, then the rest at once, is safe. (The creation is slowed to 2 s so that the two
    # `vagrant` processes overlap however loaded the machine is.)
    with running_lab(tmp_path / "lab", faults=["slow:vagrant.hostonly=2000"]) as h:
        drv = Driver(h)
        monkeypatch.setenv("PATH", h.env["PATH"])
        drv.vagrant("box", "add", "ubuntu/jammy64", "--provider", "virtualbox")
        results = _ups_at_once(h, "primary.vm", "gitlab.vm")  # what bring-up did before
        failed = [err for rc, err in results if rc != 0]
        assert len(failed) == 1 and "two host-only interfaces" in failed[0], results
        assert [
            e["detail"] for e in ops(h.journal(), "vagrant.up") if e["outcome"] == "failed"
        ] == ["duplicate host-only interface (race)"]
    with running_lab(tmp_path / "lab2") as h:
        drv = Driver(h)
        monkeypatch.setenv("PATH", h.env["PATH"])
        drv.vagrant("box", "add", "ubuntu/jammy64", "--provider", "virtualbox")
        drv.vagrant("up", "primary.vm")
        results = [rc for rc, _ in _ups_at_once(h, "gitlab.vm", "replica.vm", "linux.vm")]
        assert results == [0, 0, 0]


def test_a_vm_reconciled_twice_at_once_binds_its_listeners_once(tmp_path: Path) -> None:
    """A fault added while `vagrant up` brings a VM's listeners up reconciles the same VM: the
    second waits for the first instead of binding the same ports again (a CI run's `labsim fault
    add` died so, `address already in use`, and the lab daemon closed the connection)."""
    import asyncio

    from labsim.daemon import Daemon
    from labsim.lab import write_keys
    from labsim.launch import _hosts

    _, hosts = _hosts(1)
    cfg = {"name": "labsim-race", "time_scale": 0.001, "faults": [], "hosts": hosts}
    cfg |= {"console_password": "Pe+race", "gitlab_password": "Gl+race"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    write_keys(tmp_path, hosts)

    async def reconcile_twice() -> tuple[list[int], int]:
        lab = Daemon(tmp_path).lab
        vm = lab.role_vm("gitlab")
        vm.state, vm.serving, vm.installed = "running", True, True
        try:
            await asyncio.gather(lab.reconcile(vm), lab.reconcile(vm))
            return sorted(vm.http), vm.ssh_port
        finally:
            await lab.shutdown()

    ports, ssh_port = asyncio.run(reconcile_twice())
    assert len(ports) == 1 and ports[0] in (80, 8080), ports
    assert ssh_port in (22, 2222)
