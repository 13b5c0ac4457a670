"""The lab: its VMs and the state of PE and GitLab on them, composed of the lab's concerns: its
clock and journal (labsim/clock.py), faults (labsim/faults.py), network and listeners
(labsim/network.py), code deployment (labsim/code.py) and the Vagrant CLI with provisioning
(labsim/vagrant_cli.py, labsim/provision.py)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from labsim import pki
from labsim.clock import DURATIONS
from labsim.code import REPO_REL
from labsim.faults import EXEC_FAULTS, FaultTable, parse_fault
from labsim.http import HTTPServer
from labsim.provision import CA_PATH, KEY_FILES, KEY_OWNERS, PE_VERSION, PUPPET_CONF, SSLDIR
from labsim.puppetdb import PuppetDBs
from labsim.replication import Replication
from labsim.state import GitLabState, PEState
from labsim.vagrant_cli import NOT_READY_FOR_SSH, Emit, VagrantCLI
from labsim.vfs import VMFS

# what other modules import from here
__all__ = [
    "CA_PATH",
    "DURATIONS",
    "EXEC_FAULTS",
    "KEY_FILES",
    "KEY_OWNERS",
    "NOT_READY_FOR_SSH",
    "PE_VERSION",
    "PUPPET_CONF",
    "REPO_REL",
    "SSLDIR",
    "VM",
    "Emit",
    "Lab",
    "write_keys",
]


@dataclass
class VM:
    name: str
    role: str
    address: str
    fs: VMFS
    state: str = "not_created"
    serving: bool = False
    installed: bool = False  # PE/agent/GitLab installed by provisioning
    ssh_port: int = 22
    ssh_server: Any = None
    ssh_conns: set[Any] = field(default_factory=set)
    http: dict[int, HTTPServer] = field(default_factory=dict)
    hung: dict[int, asyncio.Server] = field(default_factory=dict)  # halted, accepting, silent
    hung_conns: set[asyncio.StreamWriter] = field(default_factory=set)
    host_keys: list[asyncssh.SSHKey] = field(default_factory=list)
    ssl_ctx: ssl.SSLContext | None = None
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    # one reconcile at a time: a fault added during `vagrant up` would bind its ports twice
    listening: asyncio.Lock = field(default_factory=asyncio.Lock)
    booted_at: float = 0.0  # epoch of the last boot: PE's services start after it

    @property
    def short(self) -> str:
        return self.name.split(".", 1)[0]


class Lab(VagrantCLI):
    """One simulated lab. Each concern is a class in the chain it inherits (Clock <- LabFaults <-
    Network <- CodeDeploy <- Provision <- VagrantCLI); they declare the attributes they use, and
    this class sets them all."""

    def __init__(self, state_dir: Path, cfg: dict[str, Any]) -> None:
        self.dir = state_dir
        self.cfg = cfg
        self.name = cfg["name"]
        self.scale = float(cfg.get("time_scale", 0.001))
        self.faults = FaultTable()
        for spec in cfg.get("faults", []):
            self.faults.add(parse_fault(spec))
        self.journal_path = state_dir / "journal.jsonl"
        self.console_password: str = cfg["console_password"]
        self.gitlab_password: str = cfg["gitlab_password"]
        self.gitlab_port: int = int(cfg.get("gitlab_http_port", 80))
        self.pe: PEState | None = None
        self.gitlab: GitLabState | None = None
        self.replication = Replication()
        self.puppetdb = PuppetDBs()
        # group id -> edits a replica accepted (fault replica:classifier-writable)
        self.replica_group_edits: dict[str, dict[str, Any]] = {}
        self.gitlab_secrets: list[str] = []
        self.vms: dict[str, VM] = {}
        # A fresh workstation has no box; `vagrant box add` or the first `vagrant up` fetches it.
        self.boxes: set[str] = set(cfg.get("boxes", []))
        self.box_importing = False
        # the host-only interface exists once a VM was created; its first `vagrant up` makes it
        self.hostonly_ready = any(
            (state_dir / "vms" / h["name"] / "meta.json").exists() for h in cfg["hosts"]
        )
        self.hostonly_creating = False
        self._sync_seq = 0
        self._last_sync: asyncio.Task[Any] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.children: set[int] = set()
        self.sshd: Any = None  # labsim.sshd module, set by daemon (avoids import cycle)
        self.api: Any = None
        for h in cfg["hosts"]:
            vdir = state_dir / "vms" / h["name"]
            fs = VMFS(vdir / "fs", vdir / "meta.json")
            fs.root.mkdir(parents=True, exist_ok=True)
            self.vms[h["name"]] = VM(h["name"], h["role"], h["address"], fs)
        self.ca_pem = (state_dir / "ca" / "ca.pem").read_bytes()
        for vm in self.vms.values():
            kdir = state_dir / "vms" / vm.name / "keys"
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(kdir / "cert.pem", kdir / "key.pem")
            # Jetty's `client-auth: want` on PE's ports: a certificate signed by the lab CA is
            # verified when sent, a request without one goes on to token authentication
            # (real-world-findings §4.4; PE's services authorise certnames on allowlists).
            ctx.load_verify_locations(cadata=self.ca_pem.decode())
            ctx.verify_mode = ssl.CERT_OPTIONAL
            vm.ssl_ctx = ctx
            vm.host_keys = [
                asyncssh.read_private_key(str(p)) for p in sorted(kdir.glob("ssh_host_*_key"))
            ]
        self.lab_key = asyncssh.read_private_key(str(state_dir / "insecure_private_key"))

    def all_secrets(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = [
            {"kind": "console-admin-password", "value": self.console_password},
            {"kind": "gitlab-root-password", "value": self.gitlab_password},
        ]
        if self.pe is not None:
            for t in self.pe.issued:
                out.append({"kind": "rbac-token", "value": t})
            for u in self.pe.users.values():
                if u.get("password") and u["login"] != "admin":
                    out.append({"kind": f"pe-user-password:{u['login']}", "value": u["password"]})
            for t in self.pe.reset_tokens:
                out.append({"kind": "rbac-reset-token", "value": t})
            for content in self.pe.primary_keys.values():
                out.append({"kind": "pe-secret-key-file", "value": content})
        for vm in self.vms.values():
            if vm.role in ("primary", "replica"):
                for path in KEY_FILES:
                    text = vm.fs.read_text(path)
                    if text:
                        out.append({"kind": "pe-secret-key-file", "value": text})
                if self.pe is not None:
                    keypath = self.pe.master_params().get("r10k_private_key")
                    text = vm.fs.read_text(keypath) if keypath else None
                    if text:
                        out.append({"kind": "r10k-private-key", "value": text})
        if self.gitlab is not None:
            for t in self.gitlab.pats:
                out.append({"kind": "gitlab-pat", "value": t})
            for t in self.gitlab.hook_tokens.values():
                out.append({"kind": "webhook-token", "value": t})
        for t in self.gitlab_secrets:
            out.append({"kind": "gitlab-pat", "value": t})
        seen: set[str] = set()
        uniq = []
        for s in out:
            if s["value"] and s["value"] not in seen:
                seen.add(s["value"])
                uniq.append(s)
        return uniq


def write_keys(state_dir: Path, hosts: list[dict[str, str]]) -> None:
    """Generate the CA, per-VM TLS certs, SSH host keys and the lab's vagrant key."""
    root = pki.make_ca(f"Puppet Root CA: labsim {state_dir.name}")
    ca_cert, ca_key = pki.make_ca(f"Puppet CA: labsim {state_dir.name}", issuer=root)
    (state_dir / "ca").mkdir(parents=True, exist_ok=True)
    (state_dir / "ca" / "ca.pem").write_bytes(ca_cert + root[0])
    pki.write_private(state_dir / "ca" / "ca_key.pem", ca_key)
    for h in hosts:
        kdir = state_dir / "vms" / h["name"] / "keys"
        kdir.mkdir(parents=True, exist_ok=True)
        cert, key = pki.make_server_cert(ca_cert, ca_key, h["name"], h["address"])
        (kdir / "cert.pem").write_bytes(cert)
        pki.write_private(kdir / "key.pem", key)
        algs = ["ssh-ed25519"] + (["ssh-rsa"] if h["role"] == "gitlab" else [])
        for alg in algs:
            k = (
                asyncssh.generate_private_key(alg, key_size=2048)
                if alg == "ssh-rsa"
                else asyncssh.generate_private_key(alg)
            )
            name = alg.split("-")[1]
            pki.write_private(kdir / f"ssh_host_{name}_key", k.export_private_key())
    lab = asyncssh.generate_private_key("ssh-ed25519", comment="vagrant")
    pki.write_private(state_dir / "insecure_private_key", lab.export_private_key())
    (state_dir / "insecure_private_key.pub").write_bytes(lab.export_public_key())
