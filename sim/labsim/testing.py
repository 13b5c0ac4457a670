"""Test and benchmark helpers: run a lab for the duration of a `with` block, walk a process
tree, migrate a Prefect database once for many servers."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from labsim import procfs
from pe_dr import processes


@dataclass
class LabHandle:
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def spec_path(self) -> Path:
        return self.state_dir / "lab.toml"

    def _cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "labsim.cli", *args, "--state", str(self.state_dir)],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def journal(self) -> list[dict[str, Any]]:
        path = self.state_dir / "journal.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def fault_add(self, spec: str) -> None:
        self._cli("fault", "add", spec)

    def fault_clear(self) -> None:
        self._cli("fault", "clear")

    def secrets(self) -> list[str]:
        out = self._cli("secrets", "--json").stdout
        return [s["value"] for s in json.loads(out)]

    def status(self) -> dict[str, str]:
        out = self._cli("status", "--json").stdout
        return {vm["name"]: vm["state"] for vm in json.loads(out)}

    def addresses(self) -> dict[str, str]:
        out = self._cli("status", "--json").stdout
        return {vm["name"]: vm["address"] for vm in json.loads(out)}

    def environ(self) -> dict[str, str]:
        """os.environ overlaid with the lab's exports."""
        return {**os.environ, **self.env}


def parse_exports(text: str, base_path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        key, _, value = line[len("export ") :].partition("=")
        if key == "PATH":
            value = value.replace('"$PATH"', base_path).replace("$PATH", base_path)
            env[key] = "".join(shlex.split(value))
        else:
            env[key] = shlex.split(value)[0] if value else ""
    return env


@contextlib.contextmanager
def running_lab(
    state_dir: Path,
    *,
    faults: Iterable[str] = (),
    time_scale: float = 0.001,
    agents: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[LabHandle]:
    """`labsim up` for the duration of the block; `labsim down` always runs on exit."""
    args = [
        sys.executable,
        "-m",
        "labsim.cli",
        "up",
        "--state",
        str(state_dir),
        "--time-scale",
        str(time_scale),
        "--agents",
        str(max(agents, 1)),
    ]
    for f in faults:
        args += ["--fault", f]
    handle = LabHandle(Path(state_dir))
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"labsim up failed ({proc.returncode}): {proc.stderr.strip()}")
        handle.env = parse_exports(proc.stdout, os.environ.get("PATH", ""))
        for key in ("PE_CONSOLE_PASSWORD", "GITLAB_ROOT_PASSWORD"):
            if key not in handle.env and env and key in env:
                handle.env[key] = env[key]
            elif key not in handle.env and key in os.environ:
                handle.env[key] = os.environ[key]
        yield handle
    finally:
        subprocess.run(
            [sys.executable, "-m", "labsim.cli", "down", "--state", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def process_tree(pid: int) -> set[int]:
    """`pid` and every process below it (from /proc), e.g. a drill's Prefect server."""
    children: dict[int, list[int]] = {}
    for child, fields in procfs.live():
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo += children.get(current, [])
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has exited: only its parent's wait is missing)."""
    return {pid for pid in pids if processes.alive(pid)}


def migrate_prefect_database(**settings: str) -> None:
    """`prefect server database upgrade` with these PREFECT_ settings (PREFECT_HOME, or the
    database URL): a fresh database costs each server that migrates it about 10 s of CPU."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(settings)
    done = subprocess.run(
        [Path(sys.executable).parent / "prefect", "server", "database", "upgrade", "-y"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrating the Prefect database failed: {done.stdout}{done.stderr}")


# --- Prefect servers on PostgreSQL, for the test tiers and benchmarks --------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")  # Debian's postgresql-15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """`check()`'s first true value, polled every `every` s for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Stop a process started with start_new_session=True, and everything in its group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
    return proc.returncode


@dataclass
class Postgres:
    port: int
    data: Path
    template: str | None = None

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def createdb(self, database: str) -> None:
        """A database with Prefect's schema: a copy of one migrated once (a migration costs each
        new server about 10 s of CPU)."""
        if self.template is None:
            self._createdb("prefect_template")
            migrate_prefect_database(
                PREFECT_API_DATABASE_CONNECTION_URL=self.url("prefect_template"),
                PREFECT_HOME=str(self.data.parent / "prefect-home"),
            )
            self.template = "prefect_template"
        self._createdb(database, "-T", self.template)

    def _createdb(self, database: str, *options: str) -> None:
        host = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        subprocess.run(
            [PG_BIN / "createdb", *host, *options, database],
            check=True,
            timeout=30,
            capture_output=True,
        )


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """PostgreSQL 15 in a private cluster on 127.0.0.1, owned by the postgres user, removed
    after."""
    root = Path(tempfile.mkdtemp(prefix="pe-dr-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    owner = pwd.getpwnam("postgres")
    for path in (root, sockets):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    as_postgres: list[str | Path] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = free_port()
    initdb: list[str | Path] = [PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust"]
    initdb += ["-E", "UTF8"]
    subprocess.run([*as_postgres, *initdb], check=True, timeout=120, capture_output=True)
    start: list[str | Path] = [PG_BIN / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "60"]
    start += ["-o", f"-k {sockets} -h 127.0.0.1 -p {port}", "start"]
    subprocess.run([*as_postgres, *start], check=True, timeout=90, capture_output=True)
    try:
        yield Postgres(port, data)
    finally:
        subprocess.run(
            [*as_postgres, PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "stop"],
            timeout=90,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def prefect_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 with `env` (its database and home), logging to
    `log`; its API URL once it answers, stopped with its process group after."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).parent / "prefect"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        return proc.poll() is None and httpx.get(f"{api}/health", timeout=2).status_code == 200

    try:
        wait_for("the Prefect server's health check", answers, timeout=90)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield api
    finally:
        stop_group(proc)


@contextlib.contextmanager
def prefect_server_on_postgres(home: Path) -> Iterator[str]:
    """A Prefect server of its own on a private PostgreSQL cluster, its home (and log) in
    `home`; its API URL. Both are gone after."""
    with postgres_cluster() as postgres:
        postgres.createdb("prefect")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_DATABASE_CONNECTION_URL=postgres.url("prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        with prefect_server(env, home / "server.log") as api:
            yield api
