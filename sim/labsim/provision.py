"""What the project's Vagrantfile provisions on each VM by its role: PE on the primary (its
certificates, secret keys and classification), a replica's PE files, the agent, GitLab."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import TYPE_CHECKING

from labsim.code import REPO_REL, CodeDeploy
from labsim.state import GitLabState, PEState

if TYPE_CHECKING:
    from labsim.lab import VM
    from labsim.vagrant_cli import Emit

KEY_FILES = (
    "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json",
    "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
    "/etc/puppetlabs/console-services/conf.d/secrets/keys.json",
)
KEY_OWNERS = ("pe-orchestration-services", "pe-orchestration-services", "pe-console-services")
SSLDIR = "/etc/puppetlabs/puppet/ssl"
CA_PATH = f"{SSLDIR}/certs/ca.pem"
PUPPET_CONF = "/etc/puppetlabs/puppet/puppet.conf"

PE_VERSION = "2025.8.0"  # the PE labsim models (the tutorial's; findings §4 are of 2025.x)


class Provision(CodeDeploy):
    console_password: str
    gitlab_password: str

    async def provision_vm(self, vm: VM, emit: Emit, primary: str | None = None) -> int:
        """The Vagrantfile's provisioning: the VM PE_DR_PRIMARY names (the spec's primary by
        default) installs PE; every other PE host installs the agent from that primary. Without
        PE_DR_PRIMARY, a lost primary rebuilt after a promotion installs a second, empty PE
        primary, as the Vagrantfile would."""
        n = vm.name
        installs_pe = vm.name == primary if primary else vm.role == "primary"
        if installs_pe:
            emit("out", f"    {n}: Installing Puppet Enterprise {PE_VERSION} ...\n")
            await self.sleep(self.dur("install.primary"))
            self.install_pe_primary(vm)
            emit("out", f"    {n}: Puppet Enterprise installed. Console: https://{n}\n")
        elif vm.role == "gitlab":
            emit("out", f"    {n}: Installing gitlab-ce ...\n")
            await self.sleep(self.dur("install.gitlab"))
            self.gitlab = GitLabState(root_password=self.gitlab_password)
            vm.fs.write("/etc/gitlab/gitlab.rb", f"external_url 'http://{vm.address}'\n", 0o600)
            (vm.fs.root / REPO_REL).mkdir(parents=True, exist_ok=True)
            vm.installed = True
            emit("out", f"    {n}: gitlab Reconfigured!\n")
        else:
            source = self.vms.get(primary or "") or (
                self.vms.get(self.pe.primary) if self.pe else self.role_vm("primary")
            )
            await self.sleep(
                self.dur("install.replica" if vm.role == "replica" else "install.agent")
            )
            if self.pe is None or not await self.tcp_open(source, 8140):
                pname = source.name if source else "primary.vm"
                emit("out", f"    {n}:   % Total    % Received % Xferd  Average Speed   Time\n")
                emit(
                    "err",
                    f"    {n}: curl: (7) Failed to connect to {pname} port 8140: "
                    "Connection refused\n"
                    "The SSH command responded with a non-zero exit status. Vagrant\n"
                    "assumes that this means the command failed. The output for this command\n"
                    "should be in the log above. Please read the output to determine what\n"
                    "went wrong.\n",
                )
                return 1
            self.install_agent(vm)
            emit("out", f"    {n}: Notice: Applied catalog in 3.21 seconds\n")
        await self.reconcile(vm)
        return 0

    def populate_base(self, vm: VM) -> None:
        fs = vm.fs
        for d in ("/home/vagrant", "/root", "/tmp", "/etc", "/var"):
            fs.host(d).mkdir(parents=True, exist_ok=True)
        fs.host("/tmp").chmod(0o777)
        fs.host("/root").chmod(0o700)
        fs.host("/home/vagrant").chmod(0o755)
        fs.set_owner("/home/vagrant", "vagrant", "vagrant")
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{v.address} {v.name} {v.short}\n" for v in self.vms.values()
        )
        fs.write("/etc/hosts", hosts)

    def install_pe_files(self, vm: VM) -> None:
        fs = vm.fs
        fs.write(CA_PATH, self.ca_pem)
        # The host's own certificate and key, where Puppet keeps them (`puppet config print
        # hostcert hostprivkey`: $ssldir/certs/<certname>.pem, $ssldir/private_keys/...).
        kdir = self.dir / "vms" / vm.name / "keys"
        fs.write(f"{SSLDIR}/certs/{vm.name}.pem", (kdir / "cert.pem").read_bytes())
        fs.write(f"{SSLDIR}/private_keys/{vm.name}.pem", (kdir / "key.pem").read_bytes(), 0o640)
        fs.host("/etc/puppetlabs/code/environments").mkdir(parents=True, exist_ok=True)
        fs.host("/opt/puppetlabs/bin").mkdir(parents=True, exist_ok=True)
        primary = self.pe.primary if self.pe else "primary.vm"
        fs.write(PUPPET_CONF, f"[agent]\nserver_list = {primary}:8140\n")

    def install_pe_primary(self, vm: VM) -> None:
        self.pe = PEState.install(vm.name, self.console_password)
        self.install_pe_files(vm)
        # PE's installer records its version here (peadm's upgrade plan reads it with
        # peadm::read_file: puppetlabs-peadm spec/plans/upgrade_spec.rb)
        vm.fs.write("/opt/puppetlabs/server/pe_version", f"{PE_VERSION}\n")
        fs = vm.fs
        for path, owner in zip(KEY_FILES, KEY_OWNERS, strict=True):
            content = json.dumps(
                [{"key": secrets.token_urlsafe(64)[:86], "id": str(uuid.uuid4())}],
                separators=(",", ":"),
            )
            fs.write(path, content, 0o640, owner, owner)
            self.pe.primary_keys[path] = content
        fs.host("/etc/puppetlabs/puppetserver/ssh").mkdir(parents=True, exist_ok=True)
        fs.write("/etc/puppetlabs/puppetserver/conf.d/webserver.conf", "webserver: {}\n")
        fs.write("/etc/puppetlabs/puppet/autosign.conf", "*\n")
        self.api.commands.write_client_tools(fs, vm.name)
        vm.installed = True

    def install_agent(self, vm: VM) -> None:
        """The agent from the primary. Its certificate is signed at once only where the primary
        autosigns (provision/primary.sh writes `*` to autosign.conf on the VM it installs; a
        promoted replica has none, so a new agent waits for `puppetserver ca sign`: Puppet's
        autosign docs, the tutorial lab's primarybootstrap script)."""
        assert self.pe is not None
        ca = self.vms[self.pe.primary]
        if "*" not in (ca.fs.read_text("/etc/puppetlabs/puppet/autosign.conf") or ""):
            self.pe.pending_certs.add(vm.name)
        self.install_pe_files(vm)
        if vm.name not in self.pe.nodes:
            self.pe.nodes.append(vm.name)
        vm.installed = True
