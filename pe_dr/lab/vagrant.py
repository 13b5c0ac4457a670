"""VagrantLab: the lab's VMs through python-vagrant 1.0.0, with bounded, killable subprocesses.

How python-vagrant is used (and where it is not enough):

* python-vagrant keeps the plumbing: the `Vagrant` object owns the project root (cwd), the whole
  subprocess environment (`env=dict(os.environ)`), the stderr sink (`err_cm`) and the argv
  assembly (`_make_vagrant_command`); `ssh_config()` and `version()` are its own methods.
* It runs every command with `subprocess.check_call/check_output`: no timeout, no process group,
  and a Ctrl-C leaves `vagrant up` (and its VBoxManage children) running. `_BoundedVagrant`
  therefore overrides its two runners (`_call_vagrant_command`, `_run_vagrant_command`) with one
  that starts vagrant in a new session (`Popen(start_new_session=True)`), waits at most `timeout`
  seconds, and on a timeout or any interruption (KeyboardInterrupt, task cancellation) kills the
  whole process group (SIGTERM, then SIGKILL). python-vagrant is pinned to 1.x (pyproject), whose
  runner signatures these overrides follow.
* It finds the binary once, at import, on the parent's PATH; we look it up on
  `os.environ["PATH"]` at every call and hand the result to the `Vagrant` object.
* Commands whose argv python-vagrant builds differently from the lab contract (flags after the
  machine name, snapshots without a machine name) go through the same runner with our own argv:
  `halt [--force] VM`, `destroy --force VM`, `snapshot save|restore|list VM [NAME]`, `validate`.
* stderr goes to a temporary file (`err_cm`); on a non-zero exit `VagrantError` carries its last
  meaningful lines (or the `error-exit` row of machine-readable output), scrubbed of secrets.
* When the process is told to stop (SIGINT, SIGTERM: pe_dr.interrupts), every vagrant command in
  flight is stopped at once, also those of other threads (parallel `vagrant up`), which would
  otherwise keep the process alive until they finish.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import vagrant as pyvagrant

from pe_dr import interrupts
from pe_dr.errors import ConfigError, PeDrError, PermanentError, VagrantError
from pe_dr.lab.spec import LabSpec, dump_spec
from pe_dr.parsing.vagrant import (
    SSHParams,
    parse_snapshot_list,
    parse_ssh_config,
    parse_vagrant_status,
    vagrant_error_exit,
)
from pe_dr.secrets import scrub

QUICK_TIMEOUT = 300.0  # status, ssh-config, version, snapshot list, validate
KILL_GRACE = 10.0
# Races of parallel `vagrant up` in one project on a first run (real-world-findings §1 row 8):
# Vagrant's own machine lock, VirtualBox's session lock, a box import already under way.
_TRANSIENT_MARKERS = (
    "another process is already executing an action",  # MachineLocked
    "MachineLocked",
    "is already locked by a session",  # VBoxManage: error: The machine '…' is already locked …
    "is locked by a session",
    "E_ACCESSDENIED (0x80070005) - Access denied (extended info not available)",
    "is locked for reading by another task",  # two imports of the same base box
    "Timed out while waiting for the machine to boot",
    "SSHNotReady",
    "is not yet ready for SSH",
)


LAB_TOML_ENV = "PE_DR_LAB_TOML"  # the spec's TOML, for provision/lab_spec.rb


def find_vagrant() -> str:
    """The vagrant executable on the current PATH; ConfigError when there is none."""
    exe = shutil.which("vagrant", path=os.environ.get("PATH", os.defpath))
    if not exe:
        raise ConfigError("vagrant is not installed or not on PATH")
    return exe


@contextlib.contextmanager
def _temp_stderr() -> Iterator[IO[Any]]:
    with tempfile.TemporaryFile(mode="w+b", prefix="pe-dr-vagrant-") as fh:
        yield fh


def _meaningful_lines(text: str, limit: int = 5) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-limit:])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop vagrant and everything it started (VBoxManage, ssh), gracefully first."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """`proc.wait(timeout)`, woken by the exit itself: Popen.wait with a timeout polls in sleeps
    of up to 50 ms, about 25 ms late on average for a short command (status, ssh-config). A pidfd
    (Linux >= 5.3) becomes readable when the process exits; elsewhere Popen's own wait."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return proc.wait(timeout=timeout)
    try:
        fd = pidfd_open(proc.pid)
    except OSError:
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, math.ceil(timeout * 1000))):  # retried on EINTR (PEP 475)
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()


_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def stop_running_commands() -> int:
    """SIGTERM the process group of every vagrant command in flight; how many there were."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    return len(procs)


def _on_stop(stop: interrupts.Stop) -> None:
    stop_running_commands()


class _BoundedVagrant(pyvagrant.Vagrant):
    """python-vagrant's Vagrant with runners that are bounded in time and killable."""

    def __init__(self, root: str, timeout: float, lab_env: dict[str, str]) -> None:
        super().__init__(root=root, env=dict(os.environ), err_cm=_temp_stderr)
        self.timeout = timeout
        self.lab_env = lab_env
        self.next_timeout: float | None = None
        self.next_env: dict[str, str] = {}  # for the next command only

    def _make_vagrant_command(self, args: Sequence[str | None]) -> list[str]:
        self._vagrant_exe = find_vagrant()  # at call time, on os.environ["PATH"]
        self.env = dict(os.environ) | self.lab_env | self.next_env
        self.next_env = {}
        return list(super()._make_vagrant_command(list(args)))

    def _call_vagrant_command(self, args: Sequence[str | None]) -> None:
        self._execute(args, capture=False)

    def _run_vagrant_command(self, args: Sequence[str | None]) -> str:
        return self._execute(args, capture=True)

    def _execute(self, args: Sequence[str | None], *, capture: bool) -> str:
        command = self._make_vagrant_command(args)
        shown = "vagrant " + " ".join(a for a in args if a is not None)
        timeout = self.next_timeout if self.next_timeout is not None else self.timeout
        self.next_timeout = None
        interrupts.on_stop(_on_stop)  # a stop ends vagrant's children too (kept once)
        with (
            self.err_cm() as err_fh,
            tempfile.TemporaryFile(mode="w+b", prefix="pe-dr-vagrant-out-") as out_fh,
        ):
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=self.root,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_fh,
                    stderr=err_fh,
                    start_new_session=True,
                )
            except FileNotFoundError:
                if not Path(self.root).is_dir():  # Popen names neither: say which is missing
                    raise ConfigError(
                        f"the lab's Vagrant folder {self.root} does not exist"
                    ) from None
                raise ConfigError("vagrant is not installed or not on PATH") from None
            with _running_lock:
                _running.add(proc)
            try:
                code = _wait(proc, timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise VagrantError(
                    f"`{shown}` did not finish within {timeout:.0f} s and was stopped",
                    transient=True,
                ) from None
            except BaseException:
                _kill_group(proc)
                raise
            finally:
                with _running_lock:
                    _running.discard(proc)
            out_fh.seek(0)
            stdout = out_fh.read().decode("utf-8", "replace")
            err_fh.seek(0)
            stderr = err_fh.read().decode("utf-8", "replace")
        if code != 0:
            exit_row = (vagrant_error_exit(stdout) or "").split("\n\n")[0]
            detail = _meaningful_lines(stderr) or " ".join(exit_row.split())
            detail = scrub(detail) or "no error output"
            transient = any(m in stderr or m in stdout for m in _TRANSIENT_MARKERS)
            elapsed = time.monotonic() - started
            raise VagrantError(
                f"`{shown}` failed with exit code {code} after {elapsed:.0f} s: {detail}",
                stderr=scrub(stderr),
                transient=transient,
            )
        return stdout if capture else ""


class VagrantLab:
    """The lab's Vagrant project (the folder with the Vagrantfile)."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 3600.0,
        spec: LabSpec | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root)) if root is not None else os.getcwd()
        self.timeout = timeout
        # the Vagrantfile builds the lab this spec describes (provision/lab_spec.rb)
        lab_env = {LAB_TOML_ENV: dump_spec(spec)} if spec is not None else {}
        self._vagrant = _BoundedVagrant(self.root, timeout, lab_env)
        # The last `vagrant status`, until this object starts, halts, destroys or restores a VM.
        # A VagrantLab lives in one Lab, so in one task: a step that reads the state twice (the
        # halt's own guard, then the action's) pays one vagrant start-up, not two.
        self._states: dict[str, str] | None = None
        self._states_lock = threading.Lock()

    def _quick(self) -> _BoundedVagrant:
        self._vagrant.next_timeout = min(self.timeout, QUICK_TIMEOUT)
        return self._vagrant

    def status(self, *, fresh: bool = False) -> dict[str, str]:
        """{machine: state id} for every machine of the Vagrantfile (`running`, `poweroff`, …);
        the one this object last read unless `fresh` or it changed a VM since."""
        with self._states_lock:
            if self._states is None or fresh:
                self._states = parse_vagrant_status(
                    self._quick()._run_vagrant_command(["status", "--machine-readable"])
                )
            return dict(self._states)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a command that changes a VM's state: the remembered status is stale after it,
        whether it succeeded or not."""
        with self._states_lock:
            self._states = None
        try:
            yield
        finally:
            with self._states_lock:
                self._states = None

    def state(self, vm: str) -> str:
        """The state id of one machine; ConfigError when the Vagrantfile has no such machine."""
        states = self.status()
        if vm not in states:
            known = ", ".join(sorted(states)) or "none"
            raise ConfigError(
                f"{vm} is not a machine of the Vagrantfile in {self.root} (machines: {known})"
            )
        return states[vm]

    def up(self, vm: str, *, primary: str | None = None) -> None:
        """`vagrant up VM` (provisions a machine that was never provisioned). `primary` names the
        VM that is PE's primary now, for the Vagrantfile (PE_DR_PRIMARY): after a promotion the
        lost primary comes back as an agent of the promoted one, to become its replica."""
        with self._changing():
            if primary is not None:
                self._vagrant.next_env = {"PE_DR_PRIMARY": primary}
            self._vagrant.up(vm_name=vm)

    def boxes(self) -> list[tuple[str, str | None]]:
        """(name, provider) of every box installed (`vagrant box list --machine-readable`)."""
        return [(b.name, b.provider) for b in self._quick().box_list()]

    def box_add(self, name: str, provider: str = "virtualbox") -> None:
        """`vagrant box add NAME --provider PROVIDER` (downloads it; can take minutes)."""
        self._vagrant._call_vagrant_command(["box", "add", name, "--provider", provider])

    def halt(self, vm: str, *, force: bool = False) -> None:
        """`vagrant halt [--force] VM`."""
        with self._changing():
            self._vagrant._call_vagrant_command(["halt", "--force" if force else None, vm])
        self._vagrant._cached_conf.pop(vm, None)

    def destroy(self, vm: str) -> None:
        """`vagrant destroy --force VM`."""
        with self._changing():
            self._vagrant._call_vagrant_command(["destroy", "--force", vm])
        self._vagrant._cached_conf.pop(vm, None)

    def snapshot_save(self, vm: str, name: str) -> None:
        """`vagrant snapshot save VM NAME`."""
        self._vagrant._call_vagrant_command(["snapshot", "save", vm, name])

    def snapshot_restore(self, vm: str, name: str) -> None:
        """`vagrant snapshot restore VM NAME`."""
        with self._changing():
            self._vagrant._call_vagrant_command(["snapshot", "restore", vm, name])

    def snapshot_list(self, vm: str) -> list[str]:
        """Snapshot names of one machine ([] when none was taken)."""
        return parse_snapshot_list(self._quick()._run_vagrant_command(["snapshot", "list", vm]))

    def ssh_params(self, vm: str) -> SSHParams:
        """Host, port, user and key of one machine, from `vagrant ssh-config VM`."""
        text = self._quick().ssh_config(vm_name=vm)
        params = parse_ssh_config(text)
        if vm in params:
            return params[vm]
        if len(params) == 1:
            return next(iter(params.values()))
        raise PermanentError(f"`vagrant ssh-config {vm}` printed no SSH settings for {vm}")

    def ssh_params_many(self, vms: Sequence[str]) -> dict[str, SSHParams]:
        """SSH settings of several machines from one `vagrant ssh-config VM…` (vagrant starts once,
        not once per machine); VagrantError when any of them is not ready for SSH."""
        if not vms:
            return {}
        text = self._quick()._run_vagrant_command(["ssh-config", *vms])
        params = parse_ssh_config(text)
        return {vm: params[vm] for vm in vms if vm in params}

    def version(self) -> str:
        """The installed vagrant version, e.g. `2.3.4`."""
        try:
            return str(self._quick().version())
        except PeDrError:
            raise
        except Exception:
            raise VagrantError("`vagrant --version` printed something unexpected") from None

    def validate(self, *, ignore_provider: bool = False) -> None:
        """`vagrant validate [--ignore-provider]`: the Vagrantfile loads and is valid.

        `ignore_provider` skips the provider section (works where VirtualBox is not installed).
        """
        self._quick()._call_vagrant_command(
            ["validate", "--ignore-provider" if ignore_provider else None]
        )
