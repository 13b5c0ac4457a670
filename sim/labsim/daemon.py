"""The lab daemon: holds the lab, serves the control socket (JSON lines)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from labsim import api, sshd
from labsim.faults import FaultSpecError, check_vms, parse_fault
from labsim.lab import Lab


def _probe_port(address: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        return True
    except OSError as exc:
        return exc.errno not in (errno.EACCES, errno.EADDRINUSE, errno.EPERM)
    finally:
        s.close()


def write_spec(state_dir: Path, cfg: dict[str, Any]) -> None:
    from pe_dr.lab.spec import HostSpec, LabSpec, Role, dump_spec

    spec = LabSpec(
        name=cfg["name"],
        vagrant_root=str(state_dir),
        hosts=[
            HostSpec(name=h["name"], role=Role(h["role"]), address=h["address"])
            for h in cfg["hosts"]
        ],
        gitlab_http_port=cfg["gitlab_http_port"],
    )
    (state_dir / "lab.toml").write_text(dump_spec(spec))


class Daemon:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.cfg = json.loads((state_dir / "config.json").read_text())
        gl = next(h for h in self.cfg["hosts"] if h["role"] == "gitlab")
        self.cfg["gitlab_http_port"] = 80 if _probe_port(gl["address"], 80) else 8080
        write_spec(state_dir, self.cfg)
        self.lab = Lab(state_dir, self.cfg)
        self.lab.sshd = sshd
        self.lab.api = api
        self.stop = asyncio.Event()

    async def serve(self) -> None:
        sock = self.dir / "control.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        server = await asyncio.start_unix_server(self._client, path=str(sock))
        sock.chmod(0o600)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.lab.journal("", "lab.up", "ok", f"lab {self.lab.name} ready")
        (self.dir / "daemon.ready").write_text(str(os.getpid()))
        await self.stop.wait()
        server.close()
        await self.lab.shutdown()
        for pid in list(self.lab.children):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.lab.journal("", "lab.down", "ok", "")
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "daemon.ready").unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(obj: dict[str, Any]) -> None:
            writer.write((json.dumps(obj) + "\n").encode())

        try:
            line = await reader.readline()
            if not line:
                return
            req = json.loads(line)
            cmd = req.get("cmd")
            lab = self.lab
            if cmd == "ping":
                send({"ok": True, "pid": os.getpid()})
            elif cmd == "vagrant" and req.get("frames"):
                # the stub's binary frames (it does without the json module: see vagrant_stub)

                def frame(kind: bytes, data: bytes) -> None:
                    writer.write(kind + len(data).to_bytes(4, "big") + data)

                def emit_frame(stream: str, text: str) -> None:
                    frame(b"o" if stream == "out" else b"e", text.encode())

                rc = await lab.vagrant(
                    list(req.get("args", [])), emit_frame, primary=req.get("primary") or None
                )
                frame(b"x", str(rc).encode())
            elif cmd == "vagrant":

                def emit(stream: str, text: str) -> None:
                    send({stream: text})

                rc = await lab.vagrant(list(req.get("args", [])), emit)
                send({"exit": rc})
            elif cmd == "status":
                send(
                    {
                        "vms": [
                            {
                                "name": v.name,
                                "role": v.role,
                                "state": v.state,
                                "address": v.address,
                                "ssh_port": v.ssh_port,
                                "ports": sorted(v.http),
                            }
                            for v in lab.vms.values()
                        ]
                    }
                )
            elif cmd == "fault_add":
                try:
                    fault = parse_fault(req["spec"])
                    check_vms(fault, list(lab.vms))
                except FaultSpecError as exc:
                    send({"error": str(exc)})
                else:
                    lab.faults.add(fault)
                    lab.journal("", "fault.add", "ok", fault.spec)
                    await lab.apply_faults()
                    send({"ok": True})
            elif cmd == "fault_clear":
                lab.faults.clear()
                lab.journal("", "fault.clear", "ok", "")
                await lab.apply_faults()
                send({"ok": True})
            elif cmd == "fault_list":
                send({"faults": [f.to_json() for f in lab.faults.faults]})
            elif cmd == "secrets":
                send({"secrets": lab.all_secrets()})
            elif cmd == "shutdown":
                send({"ok": True})
                self.stop.set()
            else:
                send({"error": f"unknown command {cmd!r}"})
            await writer.drain()
        except (ConnectionError, json.JSONDecodeError):
            pass
        except Exception as exc:
            # said to the caller, not only to daemon.log: a silent close reads as a dead daemon
            traceback.print_exc()
            with contextlib.suppress(Exception):
                send({"internal": f"{type(exc).__name__}: {exc}"})
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def main() -> None:
    state_dir = Path(sys.argv[1])
    from labsim.lab import write_keys

    cfg = json.loads((state_dir / "config.json").read_text())
    write_keys(state_dir, cfg["hosts"])
    daemon = Daemon(state_dir)
    asyncio.run(daemon.serve())


if __name__ == "__main__":
    main()
