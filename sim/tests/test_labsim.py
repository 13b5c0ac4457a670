"""labsim: the simulated lab, exercised with real clients (OpenSSH, git, paramiko, httpx,
python-vagrant)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import vagrant
from driver import R10K_KEY, REPO, Driver, labsim, ops, refused

from labsim.faults import OPERATIONS, FaultSpecError, parse_fault
from labsim.launch import _session_pids
from labsim.testing import running_lab

# -- no lab needed -------------------------------------------------------------------------------


def test_fault_specs_parse_and_reject() -> None:
    assert parse_fault("fail:puppet.agent@linux.vm=2").remaining == 2
    assert parse_fault("slow:vagrant.up=30").seconds == 30
    assert parse_fault("halt:ignored=primary.vm").vm == "primary.vm"
    for bad in ("fail:nope", "replication:sometimes", "slow:vagrant.up"):
        with pytest.raises(FaultSpecError):
            parse_fault(bad)


def test_per_store_replication_faults_parse_and_name_their_store() -> None:
    from labsim.faults import FaultTable

    table = FaultTable()
    table.add(parse_fault("replication:classifier=broken"))
    table.add(parse_fault("replication:puppetdb=2.5"))
    assert table.has_store("classifier", "broken") and not table.has_store("rbac", "broken")
    assert table.store_lag("puppetdb") == 2.5 and table.store_lag("classifier") is None
    assert table.lag() is None, "a store's lag is not file sync's"
    for bad in ("replication:activity=broken", "replication:rbac=", "replication:rbac=slow"):
        with pytest.raises(FaultSpecError):
            parse_fault(bad)


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = labsim("up", "--state", str(tmp_path), "--fault", "bogus")
    assert proc.returncode == 2
    assert "bogus" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    operations = labsim("operations")
    names = [line.split("\t")[0] for line in operations.stdout.splitlines()]
    assert names == list(OPERATIONS)
    down = labsim("down", "--state", str(tmp_path))
    assert down.returncode == 0


# -- a fresh lab: vagrant, SSH, TLS, process hygiene -----------------------------------------------


@pytest.mark.slow
def test_vagrant_ssh_tls_and_down(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    with running_lab(state) as h:
        again = labsim("up", "--state", str(state))
        assert again.returncode == 1 and "already running" in again.stderr
        pid = int((state / "daemon.pid").read_text())
        env = h.environ()
        old_path = os.environ["PATH"]
        os.environ["PATH"] = env["PATH"]  # python-vagrant finds the binary on the parent's PATH
        try:
            v = vagrant.Vagrant(root=str(state), env=env)
            states = {s.name: s.state for s in v.status()}
            assert states == {
                "primary.vm": "not_created",
                "replica.vm": "not_created",
                "linux.vm": "not_created",
                "gitlab.vm": "not_created",
            }
            v.up(vm_name="primary.vm")
            assert v.status("primary.vm")[0].state == "running"
            conf = v.conf(vm_name="primary.vm")
            assert v.version() == "2.4.1"
        finally:
            os.environ["PATH"] = old_path
        drv = Driver(h)
        # the stub quotes its argv as JSON by hand (no json import): odd names arrive intact
        odd = 'we"ird\\vm\tnamé'
        proc = drv.vagrant("ssh-config", odd, check=False)
        assert proc.returncode == 1
        assert f"The machine with the name '{odd}' was not found" in proc.stderr
        addr = drv.addr["primary.vm"]
        assert conf["HostName"] == addr and conf["User"] == "vagrant"
        ssh = [
            "/usr/bin/ssh",
            "-i",
            conf["IdentityFile"],
            "-p",
            conf["Port"],
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            f"vagrant@{addr}",
        ]
        out = subprocess.run([*ssh, "whoami"], capture_output=True, text=True, timeout=30)
        assert out.stdout == "vagrant\n"
        out = subprocess.run(
            [*ssh, "sudo -n -i whoami"], capture_output=True, text=True, timeout=30
        )
        assert out.stdout == "root\n"
        # plain sudo is not enough for puppet infrastructure; non-root cannot write /etc
        rc, _, err = drv.ssh(
            "primary.vm", ["sudo", "puppet", "infrastructure", "status"], root=False
        )
        assert rc == 1 and "root login session" in err
        rc, _, err = drv.ssh("primary.vm", ["mkdir", "-p", "/etc/x"], root=False)
        assert rc == 1 and "Permission denied" in err
        rc, _, err = drv.ssh("primary.vm", ["frobnicate"], root=False)
        assert rc == 127 and "command not found" in err
        # SFTP put + install as root + stat + get
        drv.put("primary.vm", "/etc/labsim-test.conf", "hello\n", 0o640)
        assert (
            drv.ok("primary.vm", ["stat", "-c", "%a %U %G", "/etc/labsim-test.conf"])
            == "640 root root\n"
        )
        ca = drv.ok("primary.vm", ["cat", "/etc/puppetlabs/puppet/ssl/certs/ca.pem"])
        assert ca.startswith("-----BEGIN CERTIFICATE-----")
        # TLS verifies with the VM name against the lab CA, and fails with a wrong name
        assert drv.http("primary.vm", 8140, "GET", "/status/v1/simple").text == "running"
        with pytest.raises(httpx.ConnectError) as exc:
            drv.http("primary.vm", 8140, "GET", "/status/v1/simple", name="replica.vm")
        assert (
            isinstance(exc.value.__context__, ssl.SSLCertVerificationError)
            or "certificate" in str(exc.value).lower()
        )
        # an agent install needs the primary; a halted VM refuses TCP
        drv.vagrant("halt", "primary.vm")
        assert h.status()["primary.vm"] == "poweroff"
        assert refused(addr, 8140) and refused(addr, 22)
        proc = drv.vagrant("up", "linux.vm", check=False)
        assert proc.returncode == 1
        assert (
            "curl: (7) Failed to connect to primary.vm port 8140: Connection refused" in proc.stderr
        )
        proc = drv.vagrant("ssh-config", "primary.vm", check=False)
        assert proc.returncode == 1 and "not yet ready for SSH" in proc.stderr
        proc = drv.vagrant("status", "nope.vm", check=False)
        assert proc.returncode == 1 and "was not found configured" in proc.stderr
        drv.vagrant("up", "primary.vm")
        assert drv.ok("primary.vm", ["cat", "/etc/labsim-test.conf"]) == "hello\n"
        drv.vagrant("snapshot", "save", "primary.vm", "base")
        drv.ok("primary.vm", ["rm", "-f", "/etc/labsim-test.conf"])
        drv.vagrant("snapshot", "restore", "primary.vm", "base")
        assert drv.ok("primary.vm", ["cat", "/etc/labsim-test.conf"]) == "hello\n"
        assert "base" in drv.vagrant("snapshot", "list", "primary.vm").stdout
        drv.vagrant("destroy", "-f", "primary.vm")
        assert h.status()["primary.vm"] == "not_created"
        journal = h.journal()
        assert len(ops(journal, "vagrant.up", "primary.vm")) == 2
        assert any(e["detail"] == "sudo -n -i whoami" for e in journal)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_session_pids(pid) or Path(f"/proc/{pid}").exists()):
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert _session_pids(pid) == []


# -- the whole tutorial, with the product's precondition checks ------------------------------------


@pytest.mark.slow
def test_tutorial_flow(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab") as h:
        drv = Driver(h)
        drv.up_all()
        sig = drv.setup_code_manager()
        assert (
            drv.ok(
                "primary.vm",
                ["cat", "/etc/puppetlabs/code/environments/production/.r10k-deploy.json"],
            ).count(sig)
            == 1
        )
        # git over SSH: a key not registered in GitLab is refused
        drv.ok("primary.vm", ["ssh-keygen", "-t", "ed25519", "-N", "", "-f", "/root/.ssh/other"])
        rc, _, err = drv.ssh(
            "primary.vm",
            [
                "git",
                "-C",
                REPO,
                "-c",
                "core.sshCommand=ssh -i /root/.ssh/other -o "
                "UserKnownHostsFile=/root/.ssh/known_hosts -o StrictHostKeyChecking=yes",
                "ls-remote",
                "origin",
                "production",
            ],
        )
        assert rc != 0 and "Permission denied (publickey)" in err
        assert sig in drv.ok(
            "primary.vm",
            [
                "git",
                "-C",
                REPO,
                "-c",
                f"core.sshCommand=ssh -i {R10K_KEY}",
                "ls-remote",
                "origin",
                "production",
            ],
        )
        # real git clone from here, as git@gitlab.vm with a registered key
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
            check=True,
            timeout=30,
        )
        gl_addr = drv.addr["gitlab.vm"]
        git_ssh = (
            f"ssh -i {tmp_path / 'k'} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null -o BatchMode=yes -o HostName={gl_addr}"
        )
        genv = {**os.environ, "GIT_SSH_COMMAND": git_ssh}
        url = "git@gitlab.vm:root/control-repo.git"
        bad = subprocess.run(
            ["git", "clone", url, str(tmp_path / "c0")],
            env=genv,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0 and "Permission denied (publickey)" in bad.stderr
        r = drv.gitlab(
            "POST", "/user/keys", json={"title": "t", "key": (tmp_path / "k.pub").read_text()}
        )
        assert r.status_code == 201
        subprocess.run(
            ["git", "clone", "-q", "-b", "production", url, str(tmp_path / "c1")],
            env=genv,
            check=True,
            timeout=60,
        )
        assert (tmp_path / "c1" / "Puppetfile").exists()
        assert drv.gitlab("GET", "/user", headers={"PRIVATE-TOKEN": "wrong"}).status_code == 401
        # webhook with a bad token
        r = drv.http(
            "primary.vm",
            8170,
            "POST",
            "/code-manager/v1/webhook?type=gitlab&token=bad",
            json_body={"ref": "refs/heads/production"},
        )
        assert r.status_code == 401
        r = drv.http("primary.vm", 8170, "POST", "/code-manager/v1/webhook?type=github&token=x")
        assert r.status_code == 400 and "unrecognized-webhook-type" in r.text
        # provision needs an admin token
        provision = ["puppet", "infrastructure", "provision", "replica", "replica.vm", "--yes"]
        rc, _, err = drv.ssh(
            "primary.vm",
            [
                *provision,
                *("--enable", "--topology", "mono"),
                *("--token-file", "/root/.puppetlabs/deploy_token"),
            ],
        )
        assert rc == 1 and "admin" in err
        rc, _, err = drv.ssh(
            "primary.vm", [*provision, "--token-file", "/root/.puppetlabs/missing"]
        )
        assert rc == 1 and "RBAC token" in err
        rc, out, err = drv.provision()
        assert rc == 0, err
        status = json.loads(
            drv.ok("primary.vm", ["puppet", "infrastructure", "status", "--format=json"])
        )
        assert {e["server"] for e in status} == {"primary.vm", "replica.vm"}
        assert all(e["state"] == "running" for e in status)
        groups = drv.http(
            "primary.vm", 4433, "GET", "/classifier-api/v1/groups", token=drv.admin_token
        ).json()
        agent = next(g for g in groups if g["name"] == "PE Agent")
        assert agent["classes"]["puppet_enterprise::profile::agent"]["server_list"] == [
            "primary.vm:8140",
            "replica.vm:8140",
        ]
        # the agent learns the replica only on a non-noop run
        print_sl = ["puppet", "config", "print", "server_list", "--section", "agent"]
        assert drv.ok("linux.vm", print_sl) == "primary.vm:8140\n"
        assert drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])[0] == 0
        assert drv.ok("linux.vm", print_sl) == "primary.vm:8140\n"
        jr = drv.http(
            "primary.vm",
            8143,
            "POST",
            "/orchestrator/v1/command/deploy",
            token=drv.admin_token,
            json_body={
                "environment": "",
                "enforce_environment": False,
                "scope": {"query": "nodes {deactivated is null and expired is null}"},
            },
        )
        assert jr.status_code == 202
        job_id = jr.json()["job"]["name"]
        job = drv.wait_for(
            "job",
            lambda: (
                (
                    j := drv.http(
                        "primary.vm",
                        8143,
                        "GET",
                        f"/orchestrator/v1/jobs/{job_id}",
                        token=drv.admin_token,
                    ).json()
                )["state"]
                in ("finished", "failed")
                and j
            ),
        )
        assert job["state"] == "finished"
        nodes = drv.http(
            "primary.vm",
            8143,
            "GET",
            f"/orchestrator/v1/jobs/{job_id}/nodes",
            token=drv.admin_token,
        ).json()["items"]
        assert {n["result"]["configuration_version"] for n in nodes} == {
            f"primary-production-{sig[:11]}"
        }
        assert drv.ok("linux.vm", print_sl) == "primary.vm:8140,replica.vm:8140\n"
        out = drv.ok("linux.vm", ["puppet", "agent", "-t", "--noop", "--server_list=replica.vm"])
        assert f"Applying configuration version 'replica-production-{sig[:11]}'" in out
        # push -> webhook -> deploy -> file sync to the replica
        sha = drv.commit_and_push("marker-1")
        drv.wait_for(
            "replica code",
            lambda: (
                "marker-1"
                in drv.ok(
                    "replica.vm", ["cat", "/etc/puppetlabs/code/environments/production/Puppetfile"]
                )
            ),
        )
        # the PE CA is an intermediate under a root; GitLab trusts one certificate per file, so
        # with TLS verification on, the bundle in one file is not enough
        bundle = drv.ok("primary.vm", ["cat", "/etc/puppetlabs/puppet/ssl/certs/ca.pem"])
        assert bundle.count("BEGIN CERTIFICATE") == 2
        hook = drv.gitlab("GET", "/projects/root%2Fcontrol-repo/hooks").json()[0]
        drv.gitlab(
            "PUT",
            f"/projects/root%2Fcontrol-repo/hooks/{hook['id']}",
            json={"enable_ssl_verification": True},
        )
        drv.put("gitlab.vm", "/etc/gitlab/trusted-certs/lab-ca.crt", bundle, 0o644)
        reconfigured = drv.ok("gitlab.vm", ["gitlab-ctl", "reconfigure"])
        assert "Skipping /etc/gitlab/trusted-certs/lab-ca.crt" in reconfigured
        mark = len(h.journal())
        drv.commit_and_push("marker-verified-bundle")
        delivery = drv.wait_for(
            "the webhook delivery",
            lambda: ops(h.journal()[mark:], "gitlab.webhook"),
        )
        assert delivery[0]["outcome"] == "failed" and "SSL" in delivery[0]["detail"], delivery
        drv.ok("gitlab.vm", ["rm", "-f", "/etc/gitlab/trusted-certs/lab-ca.crt"])
        end = "-----END CERTIFICATE-----\n"
        first, second = bundle.split(end, 1)
        drv.put("gitlab.vm", "/etc/gitlab/trusted-certs/a.crt", first + end)
        drv.put("gitlab.vm", "/etc/gitlab/trusted-certs/b.crt", second)
        assert "Skipping" not in drv.ok("gitlab.vm", ["gitlab-ctl", "reconfigure"])
        mark = len(h.journal())
        sha = drv.commit_and_push("marker-verified-split")
        delivery = drv.wait_for(
            "the webhook delivery", lambda: ops(h.journal()[mark:], "gitlab.webhook")
        )
        assert delivery[0]["outcome"] == "ok", delivery
        drv.wait_for(
            "replica code",
            lambda: (
                "marker-verified-split"
                in drv.ok(
                    "replica.vm", ["cat", "/etc/puppetlabs/code/environments/production/Puppetfile"]
                )
            ),
        )
        # an enabled replica runs the PCP broker and the (inactive) orchestrator before promotion
        assert drv.http("replica.vm", 8143, "GET", "/status/v1/simple").status_code == 503
        jobs = drv.http("replica.vm", 8143, "GET", "/orchestrator/v1/jobs/1", token=drv.admin_token)
        assert jobs.status_code == 503 and "promoted" in jobs.text
        assert drv.http("replica.vm", 8142, "GET", "/pcp").status_code == 400
        services = drv.http("replica.vm", 8140, "GET", "/status/v1/services").json()
        assert "file-sync-storage-service" not in services  # only a primary runs it
        promote = ["puppet", "infrastructure", "promote", "replica", "--topology", "mono", "--yes"]
        # failover
        drv.vagrant("halt", "primary.vm")
        rc, out, err = drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])
        assert rc == 0
        assert (
            "Unable to connect to server from server_list setting: Request to "
            "https://primary.vm:8140/status/v1/simple/server failed after" in err
        )
        assert "Trying with next server from server_list." in err
        assert f"'replica-production-{sha[:11]}'" in out
        # the replica's PuppetDB checks a token with the primary's RBAC, which is down; the
        # replica's own host certificate is allowlisted (real-world-findings §4.1 row 1)
        refused = drv.http(
            "replica.vm", 8081, "GET", "/pdb/query/v4/reports", token=drv.admin_token
        )
        assert refused.status_code == 503 and "RBAC" in refused.json()["msg"]
        assert drv.http("replica.vm", 8081, "GET", "/pdb/query/v4/reports").status_code == 401
        assert (
            drv.http("replica.vm", 8081, "GET", "/status/v1/services", cert="linux.vm").status_code
            == 403
        )  # an agent's certificate is not on the allowlist
        reports = drv.http(
            "replica.vm", 8081, "GET", "/pdb/query/v4/reports", cert="replica.vm"
        ).json()
        assert reports[-1]["producer"] == "replica.vm" and reports[-1]["certname"] == "linux.vm"
        status = drv.http(
            "replica.vm", 8081, "GET", "/status/v1/services/puppetdb-status", cert="replica.vm"
        ).json()
        assert status["state"] == "unknown" and status["status"]["rbac_status"] == "error"
        groups = drv.http(
            "replica.vm", 4433, "GET", "/classifier-api/v1/groups", token=drv.admin_token
        )
        assert groups.status_code == 401  # the stricter answer: labsim/faults.py
        h.fault_add("replica:accepts-tokens")
        groups = drv.http(
            "replica.vm", 4433, "GET", "/classifier-api/v1/groups", token=drv.admin_token
        )
        assert groups.status_code == 200
        h.fault_clear()
        # promotion without the key files: new keys
        before = (
            drv.ok(
                "replica.vm",
                ["sha256sum", "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json"],
            )
            if drv.ssh(
                "replica.vm",
                ["test", "-f", "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json"],
            )[0]
            == 0
            else ""
        )
        assert before == ""
        drv.ok("replica.vm", promote)
        journal = h.journal()
        assert any("orchestrator keys regenerated" in e["detail"] for e in journal)
        assert drv.http("replica.vm", 8143, "GET", "/status/v1/simple").text == "running"
        services = drv.http("replica.vm", 8140, "GET", "/status/v1/services").json()
        assert services["file-sync-storage-service"]["state"] == "running"
        # promotion does not rewrite the client tools' configuration; PE's next Puppet run on
        # the new primary does (its controller profile manages them)
        code_conf = ["cat", "/etc/puppetlabs/client-tools/puppet-code.conf"]
        conf = json.loads(drv.ok("replica.vm", code_conf))
        assert conf["service-url"] == "https://primary.vm:8170/code-manager"
        drv.ok("replica.vm", ["puppet", "agent", "-t"])
        conf = json.loads(drv.ok("replica.vm", code_conf))
        assert conf["service-url"] == "https://replica.vm:8170/code-manager"
        assert drv.http("replica.vm", 443, "GET", "/").status_code == 200
        assert len(ops(journal, "puppet.agent", "linux.vm")) == 4
        assert ops(journal, "gitlab.webhook")[-1]["outcome"] == "ok"
        # the lab never writes a secret into its journal
        text = (h.state_dir / "journal.jsonl").read_text()
        secrets = h.secrets()
        assert h.env["PE_CONSOLE_PASSWORD"] in secrets and drv.gitlab_token in secrets
        assert drv.deploy_token in secrets
        assert not [s for s in secrets if s in text]
