"""LabSpec: the lab's hosts, roles and addresses, loaded from TOML or given as a flow parameter.

The defaults are the tutorial's lab (puppet-upandrun): primary.vm, replica.vm, linux.vm, gitlab.vm.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pe_dr.errors import ConfigError
from pe_dr.settings import settings

SPEC_ENV = "PE_DR_LAB_SPEC"  # Settings.lab_spec
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
)


# a PE login: no spaces or control characters (it goes on command lines and in API paths)
_LOGIN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    AGENT = "agent"
    GITLAB = "gitlab"


class HostSpec(BaseModel):
    """One VM of the lab."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[
        str, Field(title="VM name", description="Certname and DNS name of the VM, e.g. primary.vm.")
    ]
    role: Annotated[Role, Field(title="Role", description="What the VM is in the drill.")]
    address: Annotated[
        str,
        Field(
            title="Address",
            description="IP address the controller reaches the VM on (private network).",
        ),
    ]

    memory_mb: Annotated[
        int | None,
        Field(
            title="Memory (MiB)",
            description="The VM's memory; empty: by role (PE servers 8192, GitLab 6144, agents "
            "2048).",
            ge=512,
            le=262144,
        ),
    ] = None
    cpus: Annotated[
        int | None,
        Field(
            title="CPUs",
            description="The VM's CPUs; empty: by role (2, agents 1).",
            ge=1,
            le=64,
        ),
    ] = None

    # An installation's host (target = "installation"): how the controller logs in to it.
    ssh_user: Annotated[
        str | None,
        Field(
            title="SSH user",
            description="Installation only: the login user; it becomes root with `sudo -n -i` "
            "(passwordless sudo, which pre-flight proves), as on the lab's VMs.",
            pattern=_LOGIN,
        ),
    ] = None
    ssh_port: Annotated[
        int | None,
        Field(title="SSH port", description="Installation only: default 22.", ge=1, le=65535),
    ] = None
    ssh_identity: Annotated[
        str | None,
        Field(
            title="SSH identity file",
            description="Installation only: the private key file; empty: the SSH agent's keys.",
        ),
    ] = None
    jump: Annotated[
        str | None,
        Field(
            title="Jump host",
            description="Installation only: `[user@]host[:port]` to connect through, as "
            "OpenSSH's ProxyJump.",
            pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63}@)?[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:\d{1,5})?$",
        ),
    ] = None
    canary: Annotated[
        bool,
        Field(
            title="Canary",
            description="Installation only: an agent the canary drill cuts from the primary.",
        ),
    ] = False

    @property
    def memory(self) -> int:
        return self.memory_mb or _MEMORY[self.role]

    @property
    def cpu_count(self) -> int:
        return self.cpus or (1 if self.role is Role.AGENT else 2)

    @field_validator("name")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is not a valid host name")
        return value

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        if ip.version == 6 and ip.ipv4_mapped:  # ::ffff:a.b.c.d is a.b.c.d, loopback included
            ip = ip.ipv4_mapped
        problem = _not_a_vm(ip)
        if problem:
            raise ValueError(f"{value!r} {problem}")
        return str(ip)

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[0]


# PE needs 8 GB on its servers (PE's hardware requirements; the tutorial's Vagrantfile)
_MEMORY = {Role.PRIMARY: 8192, Role.REPLICA: 8192, Role.GITLAB: 6144, Role.AGENT: 2048}


def _not_a_vm(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why no VM can be reached at `ip`, or None. Loopback aliases other than the controller's
    own address stay allowed: a simulated lab (labsim) gives each VM one on this machine."""
    if ip.is_unspecified:
        return "is the unspecified address, not a VM's"
    if ip.is_multicast:
        return "is a multicast address, not a VM's"
    if ip in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")):
        return "is this machine itself, not a VM"
    if ip.is_link_local:
        return "is a link-local address, which a VM's private network does not use"
    if ip.version == 4 and (ip.is_reserved or ip == ipaddress.ip_address("255.255.255.255")):
        return "is a reserved address, not a VM's"
    return None


_INSTALLATION_ONLY = ("ssh_user", "ssh_port", "ssh_identity", "jump", "canary")
_DEFAULTS = {
    "ssh_user": None,
    "ssh_port": None,
    "ssh_identity": None,
    "jump": None,
    "canary": False,
}


def _installation_hosts(spec: LabSpec) -> None:
    """An installation's hosts: each has a login, and the canaries are agents, a strict minority
    of them (the rest are the fleet the drill proves untouched)."""
    for h in spec.hosts:
        if h.ssh_user is None:
            raise ValueError(f"host {h.name!r} needs ssh_user: how the drill logs in to it")
        if h.canary and h.role is not Role.AGENT:
            raise ValueError(
                f"host {h.name!r} is the {h.role.value}: only an agent can be a canary"
            )
    if not spec.canaries:
        raise ValueError("an installation needs at least one agent with canary = true")
    if len(spec.canaries) * 2 >= len(spec.agents):
        raise ValueError(
            f"{len(spec.canaries)} of the {len(spec.agents)} agents are canaries: the canaries "
            "must be a strict minority, the rest the fleet the drill proves untouched"
        )


def _tutorial_hosts() -> list[HostSpec]:
    return [
        HostSpec(name="primary.vm", role=Role.PRIMARY, address="192.168.50.4"),
        HostSpec(name="replica.vm", role=Role.REPLICA, address="192.168.50.41"),
        HostSpec(name="linux.vm", role=Role.AGENT, address="192.168.50.6"),
        HostSpec(name="gitlab.vm", role=Role.GITLAB, address="192.168.50.7"),
    ]


class LabSpec(BaseModel):
    """The shape of a PE DR lab: which VM plays which part, and where to reach it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[
        str,
        Field(
            title="Lab name",
            description="Name of the lab; one drill per lab name runs at a time.",
            pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        ),
    ] = "puppet-upandrun"
    pe_version: Annotated[
        str,
        Field(
            title="PE version",
            description="Puppet Enterprise version installed, e.g. 2025.8.0.",
            pattern=r"^20\d\d\.\d{1,2}\.\d{1,3}$",
        ),
    ] = "2025.8.0"
    pe_download_url: Annotated[
        str,
        Field(
            title="PE download URL",
            description="The PE tarball for Ubuntu 22.04 the primary installs; empty: Puppet's "
            "download site for `pe_version`.",
            pattern=r"^(https://\S+)?$",
        ),
    ] = ""
    target: Annotated[
        Literal["vagrant", "installation"],
        Field(
            title="Target",
            description="vagrant: the lab this tool builds; installation: a standing PE "
            "installation, reached over SSH, that is never built, halted or destroyed.",
        ),
    ] = "vagrant"
    known_hosts: Annotated[
        str | None,
        Field(
            title="Trusted SSH host keys",
            description="Installation only: the SSH host keys to trust (default "
            "~/.ssh/known_hosts); a host whose key it does not list is refused.",
        ),
    ] = None
    vagrant_root: Annotated[
        str | None,
        Field(
            title="Vagrant folder",
            description="Folder holding the Vagrantfile; empty means the current folder.",
        ),
    ] = None
    box: Annotated[
        str,
        Field(
            title="Vagrant box",
            description="Vagrant box of the lab's VMs; fetched once before VMs start in parallel.",
            pattern=r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$",
        ),
    ] = "ubuntu/jammy64"
    hosts: Annotated[
        list[HostSpec],
        Field(title="VMs", description="The VMs: one primary, one replica, one gitlab, agents."),
    ] = Field(default_factory=_tutorial_hosts)
    gitlab_http_port: Annotated[
        int,
        Field(
            title="GitLab port", description="Port of GitLab's web and API server.", ge=1, le=65535
        ),
    ] = 80
    control_repo: Annotated[
        str,
        Field(
            title="Control repo",
            description="GitLab project path of the control repo.",
            pattern=r"^[\w.-]+/[\w.-]+$",
        ),
    ] = "root/control-repo"
    environment: Annotated[
        str,
        Field(
            title="Puppet environment",
            description="Puppet environment the drill deploys and checks (a branch of the "
            "control repo): lowercase letters, digits and underscores, as Puppet requires.",
            pattern=r"^[a-z0-9_]{1,64}$",
        ),
    ] = "production"
    console_admin: Annotated[
        str,
        Field(
            title="Console admin",
            description="PE console administrator login.",
            pattern=_LOGIN,
        ),
    ] = "admin"
    deploy_user: Annotated[
        str,
        Field(
            title="Deploy user",
            description="PE user that deploys code (Code Deployers).",
            pattern=_LOGIN,
        ),
    ] = "deploy"

    @model_validator(mode="after")
    def _roles(self) -> LabSpec:
        names = [h.name for h in self.hosts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"host {dupes[0]!r} is listed twice")
        seen: dict[str, str] = {}
        for h in self.hosts:
            if h.address in seen:
                raise ValueError(
                    f"hosts {seen[h.address]!r} and {h.name!r} have the same address "
                    f"{h.address}: each VM needs its own"
                )
            seen[h.address] = h.name
        for role in (Role.PRIMARY, Role.REPLICA, Role.GITLAB):
            count = sum(h.role is role for h in self.hosts)
            if count != 1 and not (role is Role.GITLAB and self.installation and count == 0):
                raise ValueError(f"the lab needs exactly one {role.value} host, found {count}")
        if not self.agents:
            raise ValueError("the lab needs at least one agent host")
        if self.installation:
            _installation_hosts(self)
        else:
            for h in self.hosts:
                extra = [f for f in _INSTALLATION_ONLY if getattr(h, f) != _DEFAULTS[f]]
                if extra:
                    raise ValueError(
                        f"host {h.name!r} sets {extra[0]}, which only an installation has "
                        '(target = "installation"): a Vagrant lab\'s VMs are reached as '
                        "`vagrant ssh-config` says"
                    )
            if self.known_hosts is not None:
                raise ValueError('known_hosts is for target = "installation" only')
        return self

    @property
    def installation(self) -> bool:
        return self.target == "installation"

    @property
    def canaries(self) -> list[HostSpec]:
        return [h for h in self.agents if h.canary]

    def _one(self, role: Role) -> HostSpec:
        return next(h for h in self.hosts if h.role is role)

    @property
    def primary(self) -> HostSpec:
        return self._one(Role.PRIMARY)

    @property
    def replica(self) -> HostSpec:
        return self._one(Role.REPLICA)

    @property
    def gitlab(self) -> HostSpec:
        if self.installation and not any(h.role is Role.GITLAB for h in self.hosts):
            raise ConfigError(f"installation {self.name!r} names no GitLab host")
        return self._one(Role.GITLAB)

    @property
    def agents(self) -> list[HostSpec]:
        return [h for h in self.hosts if h.role is Role.AGENT]

    def with_primary(self, name: str) -> LabSpec:
        """This lab with `name`, one of its two PE servers, as PE's primary and the other as its
        replica: a promotion swaps them (the roles of the spec are those the lab was built with)."""
        vm = self.host(name)
        if vm.name == self.primary.name:
            return self
        if vm.name != self.replica.name:
            raise ConfigError(f"{name!r} is not one of lab {self.name!r}'s two PE servers")
        old = self.primary.name
        hosts = [
            h.model_copy(update={"role": Role.PRIMARY if h.name == vm.name else Role.REPLICA})
            if h.name in (vm.name, old)
            else h
            for h in self.hosts
        ]
        return self.model_copy(update={"hosts": hosts})

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name or h.short_name == name:
                return h
        raise ConfigError(f"{name!r} is not a VM of lab {self.name!r}")

    @property
    def address_map(self) -> dict[str, str]:
        """Host name to address, for transports that must not rely on the controller's DNS."""
        return {h.name: h.address for h in self.hosts}

    @property
    def gitlab_url(self) -> str:
        port = "" if self.gitlab_http_port == 80 else f":{self.gitlab_http_port}"
        return f"http://{self.gitlab.name}{port}"

    @property
    def control_repo_remote(self) -> str:
        return f"git@{self.gitlab.name}:{self.control_repo}.git"


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "the file"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def load_spec(path: str | os.PathLike[str] | None = None) -> LabSpec:
    """The lab spec from `path`, else from $PE_DR_LAB_SPEC, else the tutorial's lab."""
    chosen = path or settings().lab_spec
    if chosen is None:
        return LabSpec()
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"lab spec {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"lab spec {file} is a folder, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"lab spec {file} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"lab spec {file} is not UTF-8 text (a TOML file is)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"lab spec {file} is not valid TOML: {exc}") from None
    if not data:  # an empty file would silently be the tutorial's lab, whatever lab is running
        raise ConfigError(
            f"lab spec {file} is empty: name the lab's hosts (or leave --spec and "
            f"{SPEC_ENV} unset for the tutorial's lab)"
        )
    try:
        spec = LabSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"lab spec {file}: {_describe(exc)}") from None
    if spec.vagrant_root and not Path(spec.vagrant_root).is_absolute():
        spec = spec.model_copy(update={"vagrant_root": str(file.parent / spec.vagrant_root)})
    if spec.vagrant_root and not Path(spec.vagrant_root).is_dir():
        raise ConfigError(
            f"lab spec {file}: vagrant_root {spec.vagrant_root} is not a folder "
            "(it holds the lab's Vagrantfile)"
        )
    return spec


def dump_spec(spec: LabSpec) -> str:
    """TOML text that `load_spec` reads back to an equal spec (and provision/lab_spec.rb reads:
    `key = "string" | integer`, comments and `[[hosts]]` tables only)."""
    lines = [
        f"{key} = {_toml_value(value)}"
        for key, value in spec.model_dump(mode="json", exclude={"hosts"}).items()
        if value is not None
    ]
    for h in spec.hosts:
        lines += ["", "[[hosts]]"]
        lines += [
            f"{key} = {_toml_value(value)}"
            for key, value in h.model_dump(mode="json", exclude_defaults=True).items()
        ]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
