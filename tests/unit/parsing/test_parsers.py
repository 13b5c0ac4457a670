"""Parsers against real outputs (tests/golden, each with a .source) and broken input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pe_dr.errors import PermanentError
from pe_dr.parsing.agent import AgentRun, DownKind, parse_agent_run
from pe_dr.parsing.pe import (
    Alert,
    DeployResult,
    KnownHost,
    parse_access_login,
    parse_code_deploy,
    parse_infra_status,
    parse_ssh_keyscan,
    servers,
    unhealthy,
)
from pe_dr.parsing.vagrant import (
    SSHParams,
    parse_snapshot_list,
    parse_ssh_config,
    parse_vagrant_status,
    vagrant_error_exit,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
PRIMARY_KEY = "/home/lab user/puppet-upandrun/.vagrant/machines/primary.vm/virtualbox/private_key"
REPLICA_KEY = "/home/lab/puppet-upandrun/.vagrant/machines/replica.vm/virtualbox/private_key"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def test_every_golden_file_says_where_it_comes_from() -> None:
    for path in GOLDEN.iterdir():
        if path.suffix == ".source" or path.name.startswith("."):
            continue
        source = path.with_name(path.name + ".source")
        assert source.is_file(), f"{path.name} has no {source.name}"
        assert source.read_text(encoding="utf-8").strip()


# --- vagrant status ---


def test_vagrant_status_python_vagrant_sample() -> None:
    assert parse_vagrant_status(golden("vagrant-status-multi.txt")) == {
        "web": "running",
        "db": "not_created",
    }


def test_vagrant_status_lab_ignores_metadata_and_ui_rows() -> None:
    assert parse_vagrant_status(golden("vagrant-status-lab.txt")) == {
        "primary.vm": "running",
        "replica.vm": "running",
        "linux.vm": "poweroff",
        "gitlab.vm": "not_created",
    }


def test_vagrant_status_unescapes_and_skips_junk() -> None:
    text = "\n".join(
        [
            "garbage line",
            "1,a,state,odd%!(VAGRANT_COMMA)value",
            "1,,ui,info,hello",
            "1,b,metadata,provider,virtualbox",
            "1,b,state,poweroff\r",
            "",
        ]
    )
    assert parse_vagrant_status(text) == {"a": "odd,value", "b": "poweroff"}
    assert parse_vagrant_status("") == {}


def test_vagrant_error_exit() -> None:
    text = (
        "1,,error-exit,Vagrant::Errors::MachineNotFound,The machine with the name 'nope' "
        "was not found configured for\\nthis Vagrant environment."
    )
    assert vagrant_error_exit(text) == (
        "The machine with the name 'nope' was not found configured for\nthis Vagrant environment."
    )
    assert vagrant_error_exit(golden("vagrant-status-lab.txt")) is None


def test_snapshot_list() -> None:
    assert parse_snapshot_list("==> primary.vm: \nbase\npre-failover\n") == ["base", "pre-failover"]
    none = (
        "==> primary.vm: No snapshots have been taken yet!\n"
        "    primary.vm: Snapshot saving is available ...\n"
    )
    assert parse_snapshot_list(none) == []


# --- ssh-config ---


def test_ssh_config_two_blocks_and_quoted_identity_file() -> None:
    params = parse_ssh_config(golden("vagrant-ssh-config.txt"))
    assert params == {
        "primary.vm": SSHParams(
            host="127.0.0.1",
            port=2222,
            user="vagrant",
            key_file=PRIMARY_KEY,
        ),
        "replica.vm": SSHParams(
            host="127.0.0.1",
            port=2200,
            user="vagrant",
            key_file=REPLICA_KEY,
        ),
    }


def test_ssh_config_negative() -> None:
    assert parse_ssh_config("") == {}
    assert parse_ssh_config("Host x\n  User vagrant\n") == {}  # no HostName: nothing to reach
    with pytest.raises(PermanentError, match="port"):
        parse_ssh_config("Host x\n  HostName 1.2.3.4\n  Port abc\n")


# --- agent runs ---


def test_agent_noop_against_replica() -> None:
    run = parse_agent_run(golden("agent-noop-replica.txt"), 0)
    assert run == AgentRun(
        exit_code=0,
        succeeded=True,
        changed=False,
        configuration_version="replica-production-240d5f61db0",
        server="replica",
        environment="production",
        commit="240d5f61db0",
    )
    assert run.served_by == "replica"


def test_agent_noop_against_primary() -> None:
    run = parse_agent_run(golden("agent-noop-primary.txt"), 0)
    assert run.server == "primary"
    assert run.commit == "240d5f61db0"
    assert run.unreachable_servers == []
    assert run.succeeded


def test_agent_failover_run() -> None:
    run = parse_agent_run(golden("agent-failover.txt"), 0)
    assert run.server == "replica"
    assert run.commit == "9f6c5881a8e"
    assert run.environment == "production"
    assert run.configuration_version == "replica-production-9f6c5881a8e"
    assert run.unreachable_servers == ["primary.vm:8140"]
    assert run.troubles[0].kind is DownKind.REFUSED
    assert run.troubles[0].waited_seconds == 0.003
    assert run.errors == ()
    assert run.succeeded and not run.changed


def test_agent_http_unavailable_warning() -> None:
    run = parse_agent_run(golden("real-503-primary.txt"), 0)  # a real Puppet 7.23 run
    assert run.unreachable_servers == ["primary.vm:8140"]
    assert run.succeeded and not run.changed
    assert run.server == "replica"


def test_agent_no_catalog_is_not_a_run_served_by_anyone() -> None:
    output = (
        "Warning: Unable to connect to server from server_list setting: Request to "
        "https://primary.vm:8140/status/v1/simple/server failed after 0.002 seconds: Failed to "
        "open TCP connection to primary.vm:8140 (Connection refused) Trying with next server "
        "from server_list.\n"
        "\x1b[1;31mError: Could not run: No more servers left in server_list\x1b[0m\n"
    )
    run = parse_agent_run(output, 1)
    assert not run.succeeded and run.served_by is None
    assert run.errors == ("Error: Could not run: No more servers left in server_list",)
    assert run.configuration_version is None
    assert run.server is None and run.commit is None and run.environment is None
    assert run.unreachable_servers == ["primary.vm:8140"]
    # exit 0 without an applied catalog is not a run served by anyone either
    assert not parse_agent_run(output, 0).succeeded


def test_agent_error_lines_in_a_run_that_applied_its_catalog_are_evidence_not_failure() -> None:
    # A failing custom fact prints Error: lines on stderr and the run still applies its catalog,
    # exit 0 (real-world-findings §2: Puppet 7.23).
    output = (
        '\x1b[1;31mError: Facter: error while resolving custom fact "broken": boom\x1b[0m\n'
        "Info: Using environment 'production'\n"
        "Info: Applying configuration version 'replica-production-9f6c5881a8e'\n"
        "\x1b[mNotice: Applied catalog in 0.06 seconds\x1b[0m\n"
    )
    run = parse_agent_run(output, 0)
    assert run.succeeded and run.served_by == "replica"
    assert run.errors == ('Error: Facter: error while resolving custom fact "broken": boom',)


@pytest.mark.parametrize("code", [1, 4, 6])
def test_agent_a_failed_exit_code_is_a_failed_run_even_with_a_catalog(code: int) -> None:
    run = parse_agent_run(golden("agent-noop-replica.txt"), code)
    assert not run.succeeded and run.served_by is None
    assert run.server == "replica"  # what it printed is still read


def test_agent_cached_catalog_is_not_served_by_a_server() -> None:
    output = (
        "Info: Using cached catalog from environment 'production'\n"
        "Info: Applying configuration version 'primary-production-240d5f61db0'\n"
        "Notice: Applied catalog in 0.05 seconds\n"
    )
    run = parse_agent_run(output, 0)
    assert run.cached_catalog and not run.succeeded and run.served_by is None


@pytest.mark.parametrize(
    ("warning", "kind", "waited"),
    [
        (
            "Request to https://primary.vm:8140/status/v1/simple/server failed after 0.001 "
            "seconds: Failed to open TCP connection to primary.vm:8140 (Connection refused - "
            "connect(2) for 127.0.50.4:8140)",
            DownKind.REFUSED,
            0.001,
        ),
        (
            "Request to https://primary.vm:8140/status/v1/simple/server timed out connect "
            "operation after 120.102 seconds",
            DownKind.HUNG,
            120.102,
        ),
        (
            "Request to https://primary.vm:8140/status/v1/simple/server timed out read "
            "operation after 600.004 seconds",
            DownKind.SILENT,
            600.004,
        ),
        (
            "Request to https://primary.vm:8140/status/v1/simple/server failed after 3.071 "
            "seconds: Failed to open TCP connection to primary.vm:8140 (No route to host - "
            "connect(2) for 192.168.50.4:8140)",
            DownKind.UNREACHABLE,
            3.071,
        ),
    ],
)
def test_agent_tells_how_the_primary_is_down(warning: str, kind: DownKind, waited: float) -> None:
    # The wordings of real-world-findings §2's table, as the agent prints them (in colour).
    output = (
        f"\x1b[1;33mWarning: Unable to connect to server from server_list setting: {warning} "
        "Trying with next server from server_list.\x1b[0m\n" + golden("agent-noop-replica.txt")
    )
    run = parse_agent_run(output, 0)
    assert run.served_by == "replica"
    (trouble,) = run.troubles
    assert (trouble.server, trouble.kind, trouble.waited_seconds) == (
        "primary.vm:8140",
        kind,
        waited,
    )


def test_agent_503_is_unavailable() -> None:
    run = parse_agent_run(golden("real-503-primary.txt"), 0)
    assert run.troubles[0].kind is DownKind.UNAVAILABLE


def test_agent_all_servers_down_names_both() -> None:
    # The shape of real-world-findings §2 "All servers down": the last server is an Error whose
    # reason follows "Wrapped exception:".
    output = (
        "Warning: Unable to connect to server from server_list setting: Request to "
        "https://primary.vm:8140/status/v1/simple/server failed after 0.001 seconds: Failed to "
        "open TCP connection to primary.vm:8140 (Connection refused - connect(2) for "
        "127.0.50.4:8140) Trying with next server from server_list.\n"
        "Error: Unable to connect to server from server_list setting: Request to "
        "https://replica.vm:8140/status/v1/simple/server failed after 0.001 seconds\n"
        "Wrapped exception:\n"
        "Failed to open TCP connection to replica.vm:8140 (Connection refused - connect(2) for "
        "127.0.50.41:8140)\n"
        "Error: Could not run Puppet configuration client: Could not select a functional puppet "
        "server from server_list: 'primary.vm:8140,replica.vm:8140'\n"
    )
    run = parse_agent_run(output, 1)
    assert not run.succeeded
    assert [(t.server, t.kind) for t in run.troubles] == [
        ("primary.vm:8140", DownKind.REFUSED),
        ("replica.vm:8140", DownKind.REFUSED),
    ]


def test_agent_non_code_manager_version_and_hyphenated_host() -> None:
    plain = parse_agent_run("Info: Applying configuration version '1732528800'\n", 0)
    assert plain.configuration_version == "1732528800"
    assert plain.server is None and plain.commit is None
    hyphen = parse_agent_run(
        "Info: Applying configuration version 'pe-std-replica-production-0123456789a'\n", 0
    )
    assert hyphen.server == "pe-std-replica"
    assert hyphen.environment == "production"
    assert hyphen.commit == "0123456789a"


# --- infra status ---


def test_infra_status_peadm_fixture() -> None:
    services = parse_infra_status(golden("infrastatus.json"))
    assert len(services) == 17
    assert servers(services) == {"pe-std.puppet.vm", "pe-std-replica.puppet.vm"}
    classifier = next(s for s in services if s.service == "classifier-service")
    assert classifier.display_name == "Classifier"
    assert classifier.state == "running"
    assert classifier.url == "https://pe-std.puppet.vm:4433/classifier-api"
    assert classifier.alerts == [Alert("error", "Database replication for Classifier is inactive")]
    bad = unhealthy(services)
    down = [s for s in bad if s.server == "pe-std-replica.puppet.vm"]
    assert sorted(s.service for s in down) == [
        "activity",
        "classifier",
        "file-sync-client",
        "master",
        "puppetdb",
        "rbac",
    ]
    assert all(s.state == "unreachable" for s in down)
    # running, but its database replication is inactive: an error alert is unhealthy too
    alerted = sorted(s.service for s in bad if s.server == "pe-std.puppet.vm")
    assert alerted == [
        "activity-service",
        "classifier-service",
        "orchestrator-service",
        "rbac-service",
    ]
    assert all(s.state == "running" for s in bad if s.server == "pe-std.puppet.vm")


def test_infra_status_warnings_are_not_unhealthy() -> None:
    text = json.dumps(
        [
            {
                "service": "puppetdb-status",
                "state": "running",
                "alerts": [{"severity": "warning", "message": "sync is slow"}],
            },
            {"service": "rbac-service", "state": "running", "alerts": ["no severity"]},
        ]
    )
    warned, bare = parse_infra_status(text)
    assert warned.alerts == [Alert("warning", "sync is slow")] and not warned.errors
    assert bare.errors == [Alert("error", "no severity")]
    assert unhealthy([warned, bare]) == [bare]


def test_infra_status_with_leading_notice() -> None:
    text = 'Notice: Contacting services\n[{"service":"pe-master","state":"running"}]\n'
    (only,) = parse_infra_status(text)
    assert only.service == "pe-master" and only.alerts == [] and only.server == ""
    assert unhealthy([only]) == []


@pytest.mark.parametrize("text", ["", "Error: not root", '{"service": "x"}', "[1, 2]"])
def test_infra_status_invalid(text: str) -> None:
    with pytest.raises(PermanentError, match="puppet infrastructure status"):
        parse_infra_status(text)


# --- puppet-code deploy ---


def test_code_deploy_wait() -> None:
    assert parse_code_deploy(golden("code-deploy-wait.txt")) == [
        DeployResult(
            environment="production",
            status="complete",
            deploy_signature="482f8d3adc76b5197306c5d4c8aa32aa8315694b",
            id=3,
            error=None,
        )
    ]


def test_code_deploy_failed() -> None:
    (result,) = parse_code_deploy(golden("code-deploy-failed.txt"))
    assert result.status == "failed"
    assert result.deploy_signature is None
    assert result.error is not None and "Authentication failed" in result.error


def test_code_deploy_queued_and_garbage() -> None:
    (queued,) = parse_code_deploy('[{"environment":"awslinux2","id":28,"status":"queued"}]')
    assert queued == DeployResult("awslinux2", "queued", None, 28, None)
    with pytest.raises(PermanentError, match="not authorized"):
        parse_code_deploy("You are not authorized to deploy Puppet environment 'production'\n")


# --- keyscan, access login ---


def test_keyscan() -> None:
    keys = parse_ssh_keyscan(golden("keyscan.txt"))
    assert [(k.name, k.type) for k in keys] == [
        ("gitlab.vm", "ssh-rsa"),
        ("gitlab.vm", "ssh-ed25519"),
    ]
    assert keys[1] == KnownHost(
        "gitlab.vm",
        "ssh-ed25519",
        "AAAAC3NzaC1lZDI1NTE5AAAAIHD4xSCHtpfWkidwtHmU+mHn2dst5ni/pL4q3Aofjoji",
    )
    # the banner comments ssh-keyscan prints on stderr, were they merged into stdout
    assert parse_ssh_keyscan("# gitlab.vm:22 SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\n\n") == []


def test_access_login() -> None:
    assert parse_access_login(golden("access-login.txt")) == "/root/.puppetlabs/token"
    assert parse_access_login("Error: Invalid username or password\n") is None
