"""A VM's filesystem: a real directory tree plus owner/group metadata."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from pathlib import Path


class VMFS:
    def __init__(self, root: Path, meta_path: Path) -> None:
        self.root = root
        self.meta_path = meta_path
        self.owners: dict[str, list[str]] = {}
        if meta_path.exists():
            self.owners = json.loads(meta_path.read_text())

    # -- paths -------------------------------------------------------------------------------
    @staticmethod
    def norm(path: str, cwd: str = "/") -> str:
        if not path.startswith("/"):
            path = posixpath.join(cwd, path)
        return posixpath.normpath(path).replace("//", "/")

    def host(self, path: str, cwd: str = "/") -> Path:
        vpath = self.norm(path, cwd)
        return self.root / vpath.lstrip("/")

    def vm_path(self, host_path: str | Path) -> str:
        rel = os.path.relpath(str(host_path), str(self.root))
        return "/" if rel == "." else "/" + rel

    def strip(self, text: str) -> str:
        """Hide the host prefix of paths in command output."""
        return text.replace(str(self.root) + "/", "/").replace(str(self.root), "/")

    # -- ownership ----------------------------------------------------------------------------
    def owner(self, path: str) -> tuple[str, str]:
        vpath = self.norm(path)
        if vpath in self.owners:
            o, g = self.owners[vpath]
            return o, g
        if vpath == "/home/vagrant" or vpath.startswith("/home/vagrant/"):
            return "vagrant", "vagrant"
        return "root", "root"

    def set_owner(self, path: str, owner: str | None = None, group: str | None = None) -> None:
        vpath = self.norm(path)
        o, g = self.owner(vpath)
        self.owners[vpath] = [owner or o, group or g]
        self.save()

    def forget(self, path: str) -> None:
        vpath = self.norm(path)
        for key in [k for k in self.owners if k == vpath or k.startswith(vpath + "/")]:
            del self.owners[key]
        self.save()

    def save(self) -> None:
        self.meta_path.parent.mkdir(parents=True, exist_ok=True)
        self.meta_path.write_text(json.dumps(self.owners))

    # -- permissions ---------------------------------------------------------------------------
    def can_write(self, user: str, path: str) -> bool:
        if user == "root":
            return True
        vpath = self.norm(path)
        allowed = ("/home/vagrant", "/tmp") if user == "vagrant" else ()
        return any(vpath == a or vpath.startswith(a + "/") for a in allowed)

    def can_read(self, user: str, path: str) -> bool:
        if user == "root":
            return True
        vpath = self.norm(path)
        if vpath == "/root" or vpath.startswith("/root/"):
            return False
        hp = self.host(vpath)
        try:
            mode = hp.stat().st_mode
        except OSError:
            return True
        owner, _ = self.owner(vpath)
        if owner == user:
            return bool(mode & 0o400)
        return bool(mode & 0o004)

    # -- helpers ----------------------------------------------------------------------------
    def write(
        self,
        path: str,
        data: bytes | str,
        mode: int = 0o644,
        owner: str = "root",
        group: str | None = None,
    ) -> None:
        hp = self.host(path)
        hp.parent.mkdir(parents=True, exist_ok=True)
        hp.write_bytes(data.encode() if isinstance(data, str) else data)
        hp.chmod(mode)
        self.owners[self.norm(path)] = [owner, group or owner]
        self.save()

    def read(self, path: str) -> bytes:
        return self.host(path).read_bytes()

    def read_text(self, path: str) -> str | None:
        try:
            return self.host(path).read_text()
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return self.host(path).exists()

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.owners = {}
        self.save()
        self.root.mkdir(parents=True, exist_ok=True)
