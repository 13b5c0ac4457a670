"""The `vagrant` stand-in script written to DIR/bin/vagrant (stdlib only, fast start)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

SCRIPT = r"""
import _socket, os, sys

STATE = {state!r}


def _quote(text):
    # a JSON string without the json module (its import was half of this script's start-up)
    out = ['"']
    for ch in text:
        out.append("\\u%04x" % ord(ch) if ch < " " or ch in '"\\' else ch)
    out.append('"')
    return "".join(out)


def main():
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(STATE, "control.sock"))
    except OSError:
        sys.stderr.write("VBoxManage: error: Could not find a registered machine (labsim daemon "
                         "for " + STATE + " is not running)\n")
        return 1
    args = ", ".join(_quote(a) for a in sys.argv[1:])
    # the Vagrantfile's one input from the environment that changes what `up` builds
    primary = _quote(os.environ.get("PE_DR_PRIMARY", ""))
    request = ('{{"cmd": "vagrant", "frames": true, "primary": ' + primary + ', "args": ['
               + args + ']}}\n')
    sock.sendall(request.encode("utf-8", "surrogateescape"))
    # frames: kind (o: stdout, e: stderr, x: exit code), 4-byte big-endian length, payload
    buf = b""
    rc = 1
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + size:
                break
            kind, payload, buf = buf[:1], buf[5:5 + size], buf[5 + size:]
            if kind == b"o":
                sys.stdout.buffer.write(payload)
                sys.stdout.flush()
            elif kind == b"e":
                sys.stderr.buffer.write(payload)
                sys.stderr.flush()
            elif kind == b"x":
                rc = int(payload)
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
