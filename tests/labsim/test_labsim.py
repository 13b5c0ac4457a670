"""labsim: the simulated lab, exercised with real clients (OpenSSH, git, paramiko, httpx,
python-vagrant)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import vagrant

from labsim.faults import OPERATIONS, FaultSpecError, parse_fault
from labsim.launch import _session_pids
from labsim.testing import running_lab

sys.path.insert(0, str(Path(__file__).parent))
from driver import R10K_KEY, REPO, Driver

LABSIM = [sys.executable, "-m", "labsim.cli"]


def _refused(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _ops(journal: list[dict], op: str, vm: str | None = None) -> list[dict]:
    return [e for e in journal if e["op"] == op and (vm is None or e["vm"] == vm)]


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
    proc = subprocess.run(
        [*LABSIM, "up", "--state", str(tmp_path), "--fault", "bogus"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "bogus" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    ops = subprocess.run([*LABSIM, "operations"], capture_output=True, text=True, timeout=30)
    names = [line.split("\t")[0] for line in ops.stdout.splitlines()]
    assert names == list(OPERATIONS)
    down = subprocess.run(
        [*LABSIM, "down", "--state", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert down.returncode == 0


# -- a fresh lab: vagrant, SSH, TLS, process hygiene -----------------------------------------------


@pytest.mark.slow
def test_vagrant_ssh_tls_and_down(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    with running_lab(state) as h:
        again = subprocess.run(
            [*LABSIM, "up", "--state", str(state)], capture_output=True, text=True, timeout=30
        )
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
        assert _refused(addr, 8140) and _refused(addr, 22)
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
        assert len(_ops(journal, "vagrant.up", "primary.vm")) == 2
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
        rc, _, err = drv.ssh(
            "primary.vm",
            [
                "puppet",
                "infrastructure",
                "provision",
                "replica",
                "replica.vm",
                "--enable",
                "--topology",
                "mono",
                "--yes",
                "--token-file",
                "/root/.puppetlabs/deploy_token",
            ],
        )
        assert rc == 1 and "admin" in err
        rc, _, err = drv.ssh(
            "primary.vm",
            [
                "puppet",
                "infrastructure",
                "provision",
                "replica",
                "replica.vm",
                "--yes",
                "--token-file",
                "/root/.puppetlabs/missing",
            ],
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
            lambda: _ops(h.journal()[mark:], "gitlab.webhook"),
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
            "the webhook delivery", lambda: _ops(h.journal()[mark:], "gitlab.webhook")
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
        assert len(_ops(journal, "puppet.agent", "linux.vm")) == 4
        assert _ops(journal, "gitlab.webhook")[-1]["outcome"] == "ok"
        # the lab never writes a secret into its journal
        text = (h.state_dir / "journal.jsonl").read_text()
        secrets = h.secrets()
        assert h.env["PE_CONSOLE_PASSWORD"] in secrets and drv.gitlab_token in secrets
        assert drv.deploy_token in secrets
        assert not [s for s in secrets if s in text]


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_faults(tmp_path: Path) -> None:
    faults = [
        "replication:broken",
        "failover:broken",
        "halt:ignored=primary.vm",
        "fail:puppet.agent@linux.vm=2",
        "slow:puppet.infrastructure.status=1500",
    ]
    with running_lab(tmp_path / "lab", faults=faults) as h:
        drv = Driver(h)
        drv.up_all()
        drv.setup_code_manager()
        assert drv.provision()[0] == 0
        # failover:broken: enabling does not add the replica to server_list
        assert drv.agent_server_list() == ["primary.vm:8140"]
        # fail:OP=N fails N times, then works
        results = [drv.ssh("linux.vm", ["puppet", "agent", "-t"])[0] for _ in range(3)]
        assert results[:2] == [1, 1] and results[2] in (0, 2)
        assert len(_ops(h.journal(), "puppet.agent", "linux.vm")) == 3
        assert [e["outcome"] for e in _ops(h.journal(), "puppet.agent", "linux.vm")][:2] == [
            "fault",
            "fault",
        ]
        # slow: adds SECONDS x time scale
        t0 = time.monotonic()
        drv.ok("primary.vm", ["puppet", "infrastructure", "status"])
        assert time.monotonic() - t0 >= 1.5
        # ... until the fault is cleared: a step slowed by 10 minutes ends once it is
        h.fault_add("slow:puppet.infrastructure.status=600000")
        slowed = ThreadPoolExecutor(1).submit(
            drv.ok, "primary.vm", ["puppet", "infrastructure", "status"]
        )
        time.sleep(0.5)
        assert not slowed.done()
        t0 = time.monotonic()
        h.fault_clear()
        assert "primary.vm" in slowed.result(timeout=30)
        assert time.monotonic() - t0 < 30
        h.fault_add("replication:broken")  # as at the start, for what follows
        # replication:broken: the replica never gets the push
        drv.commit_and_push("broken-1")
        time.sleep(1.0)
        assert (
            "broken-1"
            not in drv.ssh(
                "replica.vm", ["cat", "/etc/puppetlabs/code/environments/production/Puppetfile"]
            )[1]
        )
        # replication:lag (live): code arrives after the lag
        h.fault_clear()
        h.fault_add("replication:lag=1.5")
        t0 = time.monotonic()
        drv.commit_and_push("lag-1")
        drv.wait_for(
            "lagged code",
            lambda: (
                "lag-1"
                in drv.ssh(
                    "replica.vm", ["cat", "/etc/puppetlabs/code/environments/production/Puppetfile"]
                )[1]
            ),
        )
        assert time.monotonic() - t0 >= 1.5
        # replica:unhealthy: as in PE, every service stays running; an error alert says it
        h.fault_add("replica:unhealthy")
        st = json.loads(
            drv.ok("primary.vm", ["puppet", "infrastructure", "status", "--format=json"])
        )
        rep = [e for e in st if e["server"] == "replica.vm"]
        assert rep and all(e["state"] == "running" for e in rep)
        assert [a["severity"] for e in rep for a in e["alerts"]] == ["error"]
        r = drv.http(
            "replica.vm", 8081, "GET", "/status/v1/services/puppetdb-status", cert="replica.vm"
        )
        assert r.status_code == 200 and r.json()["active_alerts"][0]["severity"] == "error"
        h.fault_clear()
        # halt:ignored: vagrant says poweroff, the VM keeps serving (fault was given at up, and
        # cleared above; add it again live)
        h.fault_add("halt:ignored=primary.vm")
        drv.vagrant("halt", "primary.vm")
        assert h.status()["primary.vm"] == "poweroff"
        assert drv.http("primary.vm", 8140, "GET", "/status/v1/simple").text == "running"
        # fail: on an API answers 503
        h.fault_add("fail:api.rbac")
        r = drv.http("primary.vm", 4433, "GET", "/rbac-api/v1/users", token=drv.admin_token)
        assert r.status_code == 503
        assert "fault" in {e["outcome"] for e in _ops(h.journal(), "api.rbac")}


@pytest.mark.slow
def test_parallel_first_vagrant_ups_race_on_the_box_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mrcmn/puppet-upandrun's README brings VMs up one at a time; parallel first runs race on
    # VirtualBox's locks (real-world-findings §1 row 8). Once the box is there, they do not.
    from pe_dr.lab.vagrant import VagrantLab

    with running_lab(tmp_path / "lab") as h:
        drv = Driver(h)
        monkeypatch.setenv("PATH", h.env["PATH"])
        box = VagrantLab(h.state_dir)
        assert box.boxes() == []
        procs = [
            subprocess.Popen(
                ["vagrant", "up", vm],
                env=h.environ(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for vm in ("primary.vm", "gitlab.vm")
        ]
        results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
        failed = [err for rc, err in results if rc != 0]
        assert len(failed) == 1, results
        assert "locked for reading by another task" in failed[0]
        assert box.boxes() == [("ubuntu/jammy64", "virtualbox")]
        again = drv.vagrant("box", "add", "ubuntu/jammy64", check=False)
        assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.slow
def test_parallel_first_vagrant_ups_duplicate_the_host_only_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first `vagrant up` of a lab creates its host-only interface; parallel first runs each
    # create one, with the same address (real-world-findings §4.2 row 9). The primary alone
    # first, then the rest at once, is safe. (The creation is slowed to 2 s so that the two
    # `vagrant` processes overlap however loaded the machine is.)
    with running_lab(tmp_path / "lab", faults=["slow:vagrant.hostonly=2000"]) as h:
        drv = Driver(h)
        monkeypatch.setenv("PATH", h.env["PATH"])
        drv.vagrant("box", "add", "ubuntu/jammy64", "--provider", "virtualbox")

        def up_at_once(*vms: str) -> list[tuple[int, str]]:
            procs = [
                subprocess.Popen(
                    ["vagrant", "up", vm],
                    env=h.environ(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for vm in vms
            ]
            return [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]

        results = up_at_once("primary.vm", "gitlab.vm")  # what bring-up did before
        failed = [err for rc, err in results if rc != 0]
        assert len(failed) == 1 and "two host-only interfaces" in failed[0], results
        assert [
            e["detail"] for e in _ops(h.journal(), "vagrant.up") if e["outcome"] == "failed"
        ] == ["duplicate host-only interface (race)"]
    with running_lab(tmp_path / "lab2") as h:
        drv = Driver(h)
        monkeypatch.setenv("PATH", h.env["PATH"])
        drv.vagrant("box", "add", "ubuntu/jammy64", "--provider", "virtualbox")
        drv.vagrant("up", "primary.vm")
        results = [rc for rc, _ in up_at_once("gitlab.vm", "replica.vm", "linux.vm")]
        assert results == [0, 0, 0]


def test_a_vm_reconciled_twice_at_once_binds_its_listeners_once(tmp_path: Path) -> None:
    """A fault added while `vagrant up` brings a VM's listeners up reconciles the same VM: the
    second waits for the first instead of binding the same ports again (a CI run's `labsim fault
    add` died so, `address already in use`, and the lab daemon closed the connection)."""
    import asyncio

    from labsim.daemon import Daemon
    from labsim.lab import write_keys
    from labsim.launch import _hosts

    _, hosts = _hosts(1)
    cfg = {"name": "labsim-race", "time_scale": 0.001, "faults": [], "hosts": hosts}
    cfg |= {"console_password": "Pe+race", "gitlab_password": "Gl+race"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    write_keys(tmp_path, hosts)

    async def reconcile_twice() -> tuple[list[int], int]:
        lab = Daemon(tmp_path).lab
        vm = lab.role_vm("gitlab")
        vm.state, vm.serving, vm.installed = "running", True, True
        try:
            await asyncio.gather(lab.reconcile(vm), lab.reconcile(vm))
            return sorted(vm.http), vm.ssh_port
        finally:
            await lab.shutdown()

    ports, ssh_port = asyncio.run(reconcile_twice())
    assert len(ports) == 1 and ports[0] in (80, 8080), ports
    assert ssh_port in (22, 2222)


# -- faults added to a built lab, and PE's strictness ----------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A lab with Code Manager and an enabled replica, built once for the tests below."""
    with running_lab(tmp_path_factory.mktemp("built") / "lab") as h:
        drv = Driver(h)
        drv.up_all()
        drv.setup_code_manager()
        rc, _, err = drv.provision()
        assert rc == 0, err
        assert drv.ssh("linux.vm", ["puppet", "agent", "-t"])[0] in (0, 2)
        yield h, drv


PUPPETFILE = "/etc/puppetlabs/code/environments/production/Puppetfile"


def _replica_has(drv: Driver, marker: str) -> bool:
    return marker in drv.ssh("replica.vm", ["cat", PUPPETFILE])[1]


@pytest.mark.slow
def test_a_fault_naming_a_vm_the_lab_lacks_is_refused(built: Any) -> None:
    h, _ = built
    proc = subprocess.run(
        [*LABSIM, "fault", "add", "halt:hang=nope.vm", "--state", str(h.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "nope.vm" in proc.stderr and "primary.vm, replica.vm" in proc.stderr
    listed = subprocess.run(
        [*LABSIM, "--state", str(h.state_dir), "fault", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0 and listed.stdout == ""


@pytest.mark.slow
def test_failover_broken_added_to_a_built_lab_takes_the_replica_out_of_server_list(
    built: Any,
) -> None:
    h, drv = built
    both = ["primary.vm:8140", "replica.vm:8140"]
    assert drv.agent_server_list() == both
    h.fault_add("failover:broken")
    try:
        assert drv.agent_server_list() == ["primary.vm:8140"]
        assert drv.agent_server_list("PE Infrastructure Agent") == ["primary.vm:8140"]
    finally:
        h.fault_clear()
    assert drv.agent_server_list() == both


@pytest.mark.slow
def test_replication_lag_delays_every_deploy_and_keeps_their_order(built: Any) -> None:
    h, drv = built
    h.fault_add("replication:lag=1.5")
    try:
        t0 = time.monotonic()
        drv.commit_and_push("ordered-1")
        if time.monotonic() - t0 < 1.4:  # (a busy machine may take longer to push)
            assert not _replica_has(drv, "ordered-1"), "it arrived before the lag"
        h.fault_clear()
        h.fault_add("replication:lag=60")
        drv.commit_and_push("ordered-2")
        # a recovered replica fetches what is pending at once: the lag is its state now, not a
        # delay fixed when the deploy was queued (a slow drill must not stall the next one)
        h.fault_clear()
        drv.wait_for("the later commit", lambda: _replica_has(drv, "ordered-2"), timeout=15)
        syncs = [e["detail"] for e in _ops(h.journal(), "filesync", "replica.vm")]
        first = next(i for i, d in enumerate(syncs) if d.endswith(drv.last_commit("ordered-1")))
        second = next(i for i, d in enumerate(syncs) if d.endswith(drv.last_commit("ordered-2")))
        assert first < second, "a later deploy never overtakes an earlier one"
    finally:
        h.fault_clear()


@pytest.mark.slow
def test_db_replication_inactive_is_error_alerts_on_running_services(built: Any) -> None:
    h, drv = built
    h.fault_add("replica:db-replication-inactive")
    try:
        st = json.loads(
            drv.ok("primary.vm", ["puppet", "infrastructure", "status", "--format=json"])
        )
        assert all(e["state"] == "running" for e in st)
        alerts = {a["message"] for e in st if e["server"] == "primary.vm" for a in e["alerts"]}
        assert "Database replication for Classifier is inactive" in alerts
        classifier = next(e for e in st if e["service"] == "classifier-service")
        assert classifier["status"]["replication"] == {"mode": "source", "status": "inactive"}
    finally:
        h.fault_clear()
    st = json.loads(drv.ok("primary.vm", ["puppet", "infrastructure", "status", "--format=json"]))
    assert not [a for e in st for a in e["alerts"]]


@pytest.mark.slow
def test_agent_output_is_the_real_agents_and_a_failing_fact_still_applies(built: Any) -> None:
    h, drv = built
    rc, out, err = drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])
    assert rc == 0
    assert "\x1b[0;32mInfo: Applying configuration version 'primary-production-" in out
    assert "Warning" not in out and "Error" not in out
    h.fault_add("agent:fact-error")
    try:
        rc, out, err = drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])
    finally:
        h.fault_clear()
    assert rc == 0, err
    assert "\x1b[1;31mError: Facter: Error while resolving custom fact fact='pe_dr_broken'" in err
    assert "Applying configuration version 'primary-production-" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "warning"),
    [
        (None, "(Connection refused - connect(2) for "),
        ("halt:hang=primary.vm", "timed out connect operation after 1"),
        ("halt:unreachable=primary.vm", "(No route to host - connect(2) for "),
    ],
)
def test_a_halted_primary_refuses_hangs_or_is_unreachable(
    built: Any, fault: str | None, warning: str
) -> None:
    h, drv = built
    if fault:
        h.fault_add(fault)
    drv.vagrant("halt", "primary.vm")
    try:
        address = drv.addr["primary.vm"]
        if fault == "halt:hang=primary.vm":
            with socket.create_connection((address, 8140), timeout=2) as sock:
                sock.settimeout(0.3)
                with pytest.raises(TimeoutError):  # accepted, and silent
                    sock.recv(1)
        else:
            assert _refused(address, 8140)
        rc, out, err = drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])
        assert rc == 0, err
        assert "Warning: Unable to connect to server from server_list setting" in err
        assert warning in err and "Trying with next server from server_list." in err
        assert "Applying configuration version 'replica-production-" in out
    finally:
        h.fault_clear()
        drv.vagrant("up", "primary.vm")
    assert not _refused(drv.addr["primary.vm"], 8140)


@pytest.mark.slow
def test_a_metric_puppetdb_lacks_is_answered_as_jolokia_answers_it(built: Any) -> None:
    """Real PuppetDB (tests/golden/puppetdb-sync-metric-missing.json, Debian's 7.12): HTTP 200,
    the error in the body with `"status": 404` and Jolokia's error type."""
    _, drv = built
    golden = json.loads(
        (Path(__file__).parents[1] / "golden" / "puppetdb-sync-metric-missing.json").read_text()
    )
    r = drv.http(
        "replica.vm",
        8081,
        "GET",
        "/metrics/v2/read/puppetlabs.puppetdb.ha:name=no-such-metric",
        cert="replica.vm",
    )
    assert r.status_code == 200
    assert set(r.json()) == set(golden) and r.json()["status"] == 404
    assert r.json()["error_type"] == golden["error_type"]
    assert r.json()["request"]["mbean"] == "puppetlabs.puppetdb.ha:name=no-such-metric"


@pytest.mark.slow
def test_pe_refuses_what_pe_refuses(built: Any) -> None:
    _, drv = built
    # the classifier: a class parameter the class does not have is 422 missing-referents
    groups = drv.http(
        "primary.vm", 4433, "GET", "/classifier-api/v1/groups", token=drv.admin_token
    ).json()
    master = next(g for g in groups if g["name"] == "PE Master")
    r = drv.http(
        "primary.vm",
        4433,
        "POST",
        f"/classifier-api/v1/groups/{master['id']}",
        token=drv.admin_token,
        json_body={"classes": {"puppet_enterprise::profile::master": {"r10k_nope": True}}},
    )
    assert r.status_code == 422 and r.json()["kind"] == "missing-referents"
    assert r.json()["details"][0]["missing"] == "r10k_nope"
    # RBAC token validation: 400 malformed, 403 unknown, 200 valid
    auth = "/rbac-api/v2/auth/token/authenticate"
    assert drv.http("primary.vm", 4433, "POST", auth, json_body={"token": "x y"}).status_code == 400
    unknown = {"token": "0" + "a" * 40}
    assert drv.http("primary.vm", 4433, "POST", auth, json_body=unknown).status_code == 403
    valid = {"token": drv.admin_token}
    assert drv.http("primary.vm", 4433, "POST", auth, json_body=valid).status_code == 200
    # forget is documented without --token-file (labsim refuses it: the stricter answer), takes
    # the admin token from its default place, and fails on a node PE does not know
    forget = ["puppet", "infrastructure", "forget", "stranger.vm"]
    rc, _, err = drv.ssh("primary.vm", [*forget, "--token-file", "/root/.puppetlabs/admin_token"])
    assert rc == 1 and "Unknown option '--token-file'" in err
    assert drv.admin_token
    drv.put("primary.vm", "/root/.puppetlabs/token", drv.admin_token)
    rc, _, err = drv.ssh("primary.vm", forget)
    assert rc == 1 and "not a known node" in err
    # puppet-code's global options go before the action
    late = ["puppet-code", "deploy", "production", "--token-file", "/root/.puppetlabs/token"]
    rc, _, err = drv.ssh("primary.vm", late)
    assert rc == 1 and "global options go before the action" in err


@pytest.mark.slow
def test_every_vagrant_invocation_and_ssh_connection_is_journaled(built: Any) -> None:
    """`make bench` counts them: on a real lab each `vagrant` call costs Ruby's start-up."""
    h, drv = built
    before = len(h.journal())
    drv.vagrant("status")
    drv.vagrant("ssh-config", "linux.vm")
    calls = [e["detail"] for e in _ops(h.journal()[before:], "vagrant.command")]
    assert calls == ["status", "ssh-config linux.vm"]
    before = len(h.journal())
    drv._client("linux.vm").close()  # a connection of its own (the driver keeps its others)
    assert len(_ops(h.journal()[before:], "ssh.connect", "linux.vm")) == 1
    logins = _ops(h.journal()[before:], "ssh.login", "linux.vm")
    assert [e["detail"] for e in logins] == ["vagrant"], "whose connection it was"
