"""The `vagrant` stand-in script written to DIR/bin/vagrant (stdlib only, fast start)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

SCRIPT = r"""
import json, os, socket, sys

STATE = {state!r}


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(STATE, "control.sock"))
    except OSError:
        sys.stderr.write("VBoxManage: error: Could not find a registered machine (labsim daemon "
                         "for " + STATE + " is not running)\n")
        return 1
    sock.sendall((json.dumps({{"cmd": "vagrant", "args": sys.argv[1:]}}) + "\n").encode())
    buf = b""
    rc = 1
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "out" in msg:
                sys.stdout.write(msg["out"])
                sys.stdout.flush()
            if "err" in msg:
                sys.stderr.write(msg["err"])
                sys.stderr.flush()
            if "exit" in msg:
                rc = msg["exit"]
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
"""


def write_stub(state_dir: Path) -> Path:
    bindir = state_dir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / "vagrant"
    path.write_text(f"#!{sys.executable} -S\n" + SCRIPT.format(state=str(state_dir)))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (state_dir / "Vagrantfile").write_text(
        "# labsim: simulated puppet-upandrun lab; the VMs are served by the labsim daemon.\n"
        "Vagrant.configure('2') do |config|\nend\n"
    )
    _ = os
    return path
