"""VagrantLab against a fake `vagrant` on PATH that records its argv and prints golden outputs."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from pe_dr.errors import ConfigError, PermanentError, VagrantError
from pe_dr.lab.vagrant import VagrantLab
from pe_dr.parsing.vagrant import SSHParams
from pe_dr.secrets import MASK, remember

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
PRIMARY_KEY = "/home/lab user/puppet-upandrun/.vagrant/machines/primary.vm/virtualbox/private_key"
REPLICA_KEY = "/home/lab/puppet-upandrun/.vagrant/machines/replica.vm/virtualbox/private_key"

FAKE = r"""#!{python}
import json, os, subprocess, sys, time
from pathlib import Path

golden = Path({golden!r})
here = Path(__file__).parent
args = sys.argv[1:]
with open(here / "argv.jsonl", "a") as fh:
    record = {{"argv": args, "cwd": os.getcwd(), "marker": os.environ.get("LAB_MARKER")}}
    fh.write(json.dumps(record) + "\n")
if os.environ.get("FAKE_FAIL"):
    sys.stderr.write("Bringing machine 'primary.vm' up...\n\n")
    sys.stderr.write(os.environ["FAKE_FAIL"] + "\n\n")
    sys.exit(1)
if os.environ.get("FAKE_HANG"):
    child = subprocess.Popen(["sleep", "60"])
    (here / "child.pid").write_text(str(child.pid))
    time.sleep(60)
cmd = args[0] if args else ""
if cmd == "status":
    sys.stdout.write((golden / "vagrant-status-lab.txt").read_text())
elif cmd == "ssh-config":
    text = (golden / "vagrant-ssh-config.txt").read_text()
    blocks = ["Host " + b for b in text.split("Host ") if b.strip()]
    sys.stdout.write("".join(b for b in blocks if b.split()[1] == args[1]))
elif cmd == "--version":
    print("Vagrant 2.3.4")
elif cmd == "snapshot" and args[1] == "list":
    if args[2] == "primary.vm":
        print("==> primary.vm: ")
        print("base")
        print("pre-failover")
    else:
        print("==> " + args[2] + ": No snapshots have been taken yet!")
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "vagrant"
    script.write_text(FAKE.format(python=sys.executable, golden=str(GOLDEN)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("FAKE_FAIL", "FAKE_HANG"):
        monkeypatch.delenv(name, raising=False)
    return bindir


@pytest.fixture
def lab(tmp_path: Path) -> VagrantLab:
    root = tmp_path / "lab"
    root.mkdir()
    return VagrantLab(root, timeout=30)


def calls(bindir: Path) -> list[list[str]]:
    path = bindir / "argv.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["argv"] for line in path.read_text().splitlines()]


def test_status_and_state(fake: Path, lab: VagrantLab) -> None:
    assert lab.status() == {
        "primary.vm": "running",
        "replica.vm": "running",
        "linux.vm": "poweroff",
        "gitlab.vm": "not_created",
    }
    assert lab.state("gitlab.vm") == "not_created"
    assert calls(fake) == [["status", "--machine-readable"]], "one vagrant start-up, read twice"


def test_status_is_read_again_after_a_vm_changed_or_when_asked(
    fake: Path, lab: VagrantLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = ["status", "--machine-readable"]
    lab.state("primary.vm")
    lab.halt("primary.vm")
    lab.state("primary.vm")
    lab.up("primary.vm")
    lab.status()
    lab.destroy("replica.vm")
    lab.status()
    lab.snapshot_restore("primary.vm", "base")
    lab.status()
    lab.status(fresh=True)
    assert calls(fake) == [
        status,
        ["halt", "primary.vm"],
        status,
        ["up", "primary.vm"],
        status,
        ["destroy", "--force", "replica.vm"],
        status,
        ["snapshot", "restore", "primary.vm", "base"],
        status,
        status,
    ]
    monkeypatch.setenv("FAKE_FAIL", "VBoxManage: error: boom")
    with pytest.raises(VagrantError):
        lab.halt("primary.vm")  # failed, but may have changed the VM
    monkeypatch.delenv("FAKE_FAIL")
    lab.status()
    assert calls(fake)[-1] == status and len(calls(fake)) == 12


def test_unknown_vm_is_permanent(fake: Path, lab: VagrantLab) -> None:
    with pytest.raises(PermanentError, match=r"windows\.vm is not a machine") as info:
        lab.state("windows.vm")
    assert "primary.vm" in str(info.value)


def test_exact_argv_cwd_and_env(
    fake: Path, lab: VagrantLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_MARKER", "from-os-environ")
    lab.up("primary.vm")
    lab.halt("primary.vm")
    lab.halt("primary.vm", force=True)
    lab.destroy("replica.vm")
    lab.snapshot_save("primary.vm", "pre-failover")
    lab.snapshot_restore("primary.vm", "pre-failover")
    assert calls(fake) == [
        ["up", "primary.vm"],
        ["halt", "primary.vm"],
        ["halt", "--force", "primary.vm"],
        ["destroy", "--force", "replica.vm"],
        ["snapshot", "save", "primary.vm", "pre-failover"],
        ["snapshot", "restore", "primary.vm", "pre-failover"],
    ]
    records = [json.loads(line) for line in (fake / "argv.jsonl").read_text().splitlines()]
    assert {r["cwd"] for r in records} == {lab.root}
    assert {r["marker"] for r in records} == {"from-os-environ"}  # env is os.environ at call time


def test_snapshot_list(fake: Path, lab: VagrantLab) -> None:
    assert lab.snapshot_list("primary.vm") == ["base", "pre-failover"]
    assert lab.snapshot_list("replica.vm") == []
    assert calls(fake)[0] == ["snapshot", "list", "primary.vm"]


def test_ssh_params(fake: Path, lab: VagrantLab) -> None:
    assert lab.ssh_params("primary.vm") == SSHParams(
        host="127.0.0.1",
        port=2222,
        user="vagrant",
        key_file=PRIMARY_KEY,
    )
    assert lab.ssh_params("replica.vm").port == 2200
    assert calls(fake) == [["ssh-config", "primary.vm"], ["ssh-config", "replica.vm"]]


def test_version_and_validate(fake: Path, lab: VagrantLab) -> None:
    assert lab.version() == "2.3.4"
    lab.validate()
    lab.validate(ignore_provider=True)
    assert calls(fake) == [["--version"], ["validate"], ["validate", "--ignore-provider"]]


def test_failure_carries_vagrant_stderr_scrubbed(
    fake: Path, lab: VagrantLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = remember("s3cret-Passw0rd-xyz")
    monkeypatch.setenv(
        "FAKE_FAIL",
        f"The provider 'virtualbox' could not be found, but was requested to back the machine "
        f"'primary.vm'. token={secret}",
    )
    with pytest.raises(VagrantError) as info:
        lab.up("primary.vm")
    message = str(info.value)
    assert "`vagrant up primary.vm` failed with exit code 1" in message
    assert "The provider 'virtualbox' could not be found" in message
    assert secret not in message and MASK in message
    assert secret not in info.value.stderr
    assert "Bringing machine" in info.value.stderr
    assert not info.value.transient


def test_machine_locked_is_transient(
    fake: Path, lab: VagrantLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "FAKE_FAIL",
        "An action 'halt' was attempted on the machine 'primary.vm',\n"
        "but another process is already executing an action on the machine.",
    )
    with pytest.raises(VagrantError) as info:
        lab.halt("primary.vm", force=True)
    assert info.value.transient


def test_missing_binary_is_config_error(
    tmp_path: Path, lab: VagrantLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ConfigError, match="vagrant is not installed or not on PATH"):
        lab.status()


def test_binary_is_looked_up_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Path
) -> None:
    lab = VagrantLab(tmp_path, timeout=30)  # created while the fake is on PATH ...
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # ... and used when it is not
    with pytest.raises(ConfigError):
        lab.version()


def test_timeout_kills_the_process_group(
    fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HANG", "1")
    lab = VagrantLab(tmp_path, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(VagrantError, match="did not finish within 2 s") as info:
        lab.up("primary.vm")
    assert info.value.transient
    assert time.monotonic() - started < 15
    child = int((fake / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "vagrant's child survived the timeout"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"
