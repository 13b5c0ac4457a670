"""Code Manager actions on the PE side act only when needed (tutorial 02-codemanager-config): the
agent profile, the r10k key, GitLab's host keys, the PE Master parameters, the deploy and the
webhook."""

from __future__ import annotations

import shlex

import pytest

from pe_dr.errors import ApiError, CommandFailed, PreconditionError, TransientError
from pe_dr.lab import paths
from pe_dr.parsing.pe import KnownHost
from pe_dr.steps import code_manager, primary_settings

from ..fake_lab import FakeLab
from ..fakes import Exists, FakeHost, Http, LabCall, Put, Read, Run, stat_mode_owner
from .code_manager_lab import (
    DEPLOY_TOKEN,
    GITLAB_API,
    GROUPS,
    HEAD,
    LS_REMOTE,
    PRIMARY,
    PUBLIC_KEY,
    REMOTE,
    admin_token,
    gitlab_token,
    golden,
)

# --- ensure_agent_profile ------------------------------------------------------------------------

AGENT_PARAMS = {  # the tutorial's step 2: what PE sets up on install
    "manage_puppet_conf": True,
    "pcp_broker_list": ["primary.vm:8142"],
    "primary_uris": ["primary.vm:8140"],
    "server_list": ["primary.vm:8140"],
}


def agent_group(params: dict[str, object]) -> list[dict[str, object]]:
    return [
        {"id": "a1", "name": "PE Master", "classes": {}},
        {
            "id": "b2",
            "name": "PE Infrastructure Agent",
            "classes": {"puppet_enterprise::profile::agent": params},
        },
    ]


def test_agent_profile_as_pe_sets_it_up_is_only_read(lab: FakeLab) -> None:
    admin_token(lab)
    lab.http.on("GET", GROUPS, json=agent_group(AGENT_PARAMS))
    assert primary_settings.ensure_agent_profile(lab) == AGENT_PARAMS
    assert lab.http.requests == [Http("GET", GROUPS)]
    assert lab.mutations() == []


@pytest.mark.parametrize(
    "servers",
    [["primary.vm"], ["primary.vm:8140", "replica.vm:8140"], ["https://primary.vm:8140/"]],
)
def test_agent_profile_entries_are_compared_by_host(lab: FakeLab, servers: list[str]) -> None:
    # PE's docs write ["PRIMARY.EXAMPLE.COM"], PE itself host:8140 (real-world-findings §4.2 r10)
    admin_token(lab)
    params = {**AGENT_PARAMS, "server_list": servers, "primary_uris": servers}
    lab.http.on("GET", GROUPS, json=agent_group(params))
    assert primary_settings.ensure_agent_profile(lab) == params


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"server_list": ["primary.vm.example.com:8140"]}, "server_list"),
        ({"manage_puppet_conf": False}, "manage_puppet_conf"),
        ({"server_list": ["replica.vm:8140", "primary.vm:8140"]}, "server_list"),
        ({"primary_uris": []}, "primary_uris"),
        ({"server_list": "primary.vm:8140"}, "server_list"),
    ],
)
def test_agent_profile_not_as_pe_sets_it_up_is_refused_naming_the_parameter(
    lab: FakeLab, change: dict[str, object], named: str
) -> None:
    admin_token(lab)
    lab.http.on("GET", GROUPS, json=agent_group({**AGENT_PARAMS, **change}))
    with pytest.raises(PreconditionError, match=named):
        primary_settings.ensure_agent_profile(lab)
    assert lab.mutations() == []


# --- ensure_r10k_key -----------------------------------------------------------------------------

KEYGEN = ["ssh-keygen", "-t", "rsa", "-b", "2048", "-N", "", "-C", "pe-dr", "-f", paths.R10K_KEY]


STAT_KEY = ["stat", "-c", "%a %U %G", paths.R10K_KEY]
# the public key derived from the private one (a promoted replica has the key, not its .pub)
PUBLIC_OF = ["ssh-keygen", "-y", "-f", paths.R10K_KEY]


def test_existing_r10k_key_is_only_read(lab: FakeLab) -> None:
    lab.primary.write(paths.R10K_KEY, "PRIVATE", mode=0o600, owner="pe-puppet", group="pe-puppet")
    lab.primary.on(STAT_KEY, stat_mode_owner)
    lab.primary.on(PUBLIC_OF, stdout=PUBLIC_KEY + "\n")
    assert code_manager.ensure_r10k_key(lab) == PUBLIC_KEY
    assert lab.primary.calls == [
        Exists(paths.R10K_KEY, root=True),
        Run(STAT_KEY, root=True),
        Run(PUBLIC_OF, root=True),
    ]


def test_r10k_key_made_by_a_run_that_died_before_configure_is_configured(lab: FakeLab) -> None:
    """A key that `puppet infrastructure configure` has not yet given to pe-puppet (the run that
    made it died first): a Retry runs configure, it does not take the key as done."""
    lab.primary.write(paths.R10K_KEY, "PRIVATE", mode=0o600, owner="root", group="root")
    lab.primary.on(STAT_KEY, stat_mode_owner)
    lab.primary.on(["puppet", "infrastructure", "configure"])
    lab.primary.on(PUBLIC_OF, stdout=PUBLIC_KEY + "\n")
    assert code_manager.ensure_r10k_key(lab) == PUBLIC_KEY
    assert lab.primary.commands() == [
        STAT_KEY,
        ["puppet", "infrastructure", "configure"],
        PUBLIC_OF,
    ]


def test_missing_r10k_key_is_made_then_pe_lets_pe_puppet_read_it(lab: FakeLab) -> None:
    def keygen(host: FakeHost) -> None:
        host.write(paths.R10K_KEY, "PRIVATE", mode=0o600)
        host.write(paths.R10K_KEY + ".pub", PUBLIC_KEY + "\n")

    lab.primary.on(["mkdir", "-p", "/etc/puppetlabs/puppetserver/ssh"])
    lab.primary.on(KEYGEN, effect=keygen)
    lab.primary.on(["puppet", "infrastructure", "configure"])
    lab.primary.on(PUBLIC_OF, stdout=PUBLIC_KEY + "\n")
    assert code_manager.ensure_r10k_key(lab) == PUBLIC_KEY
    assert lab.primary.calls == [
        Exists(paths.R10K_KEY, root=True),
        Run(["mkdir", "-p", "/etc/puppetlabs/puppetserver/ssh"], root=True),
        Run(KEYGEN, root=True),
        Run(["puppet", "infrastructure", "configure"], root=True),
        Run(PUBLIC_OF, root=True),
    ]


def test_r10k_key_that_cannot_be_made_stops_before_configure(lab: FakeLab) -> None:
    lab.primary.on(["mkdir", "-p", "/etc/puppetlabs/puppetserver/ssh"])
    lab.primary.on(KEYGEN, exit_code=1, stderr="Saving key failed: No space left on device\n")
    with pytest.raises(CommandFailed, match="No space left"):
        code_manager.ensure_r10k_key(lab)
    assert ["puppet", "infrastructure", "configure"] not in lab.primary.commands()


# --- ensure_known_hosts --------------------------------------------------------------------------

KEYSCAN = ["ssh-keyscan", "-t", "rsa,ed25519", "gitlab.vm"]
GOLDEN_KEYS = [  # the host key lines of tests/golden/keyscan.txt
    line for line in golden("keyscan.txt").splitlines() if line and not line.startswith("#")
]


def test_known_hosts_holding_gitlabs_keys_is_not_rewritten(lab: FakeLab) -> None:
    lab.primary.on(KEYSCAN, stdout=golden("keyscan.txt"))
    lab.primary.write(paths.ROOT_KNOWN_HOSTS, "\n".join(GOLDEN_KEYS) + "\n")
    keys = code_manager.ensure_known_hosts(lab)
    assert [f"{k.name} {k.type} {k.key}" for k in keys] == GOLDEN_KEYS
    assert lab.primary.calls == [
        Run(KEYSCAN),  # as the login user: a scan needs no root
        Exists(paths.ROOT_KNOWN_HOSTS, root=True),
        Read(paths.ROOT_KNOWN_HOSTS, root=True),
    ]


def test_missing_known_hosts_is_written_with_gitlabs_keys(lab: FakeLab) -> None:
    lab.primary.on(KEYSCAN, stdout=golden("keyscan.txt"))
    code_manager.ensure_known_hosts(lab)
    assert lab.primary.puts() == [
        Put(
            paths.ROOT_KNOWN_HOSTS,
            ("\n".join(GOLDEN_KEYS) + "\n").encode(),
            mode=0o644,
            owner="root",
            group="root",
        )
    ]


def test_known_hosts_keeps_other_hosts_and_replaces_gitlabs_old_keys(lab: FakeLab) -> None:
    lab.primary.on(KEYSCAN, stdout=golden("keyscan.txt"))
    lab.primary.write(
        paths.ROOT_KNOWN_HOSTS,
        "github.com ssh-ed25519 AAAAgithub\ngitlab.vm ssh-rsa AAAAold-rebuilt-vm\n",
    )
    code_manager.ensure_known_hosts(lab)
    [put] = lab.primary.puts()
    assert put.content.decode().splitlines() == ["github.com ssh-ed25519 AAAAgithub", *GOLDEN_KEYS]


@pytest.mark.parametrize(
    "scan",
    ["", "# gitlab.vm:22 SSH-2.0-OpenSSH_8.9p1\n", "other.vm ssh-rsa AAAAother\n"],
)
def test_no_host_key_for_gitlab_is_transient_and_writes_nothing(lab: FakeLab, scan: str) -> None:
    lab.primary.on(KEYSCAN, stdout=scan)
    with pytest.raises(TransientError, match=r"no host key for gitlab\.vm"):
        code_manager.ensure_known_hosts(lab)
    assert lab.mutations() == []


# --- ensure_pe_master_params ---------------------------------------------------------------------

KNOWN = [
    KnownHost("gitlab.vm", "ssh-rsa", "AAAAB3rsa"),
    KnownHost("gitlab.vm", "ssh-ed25519", "AAAAC3ed"),
]
MASTER_PARAMS = {  # tutorial step 4, with the scanned host keys
    "code_manager_auto_configure": True,
    "r10k_remote": REMOTE,
    "r10k_private_key": "/etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa",
    "r10k_known_hosts": [
        {"name": "gitlab.vm", "type": "ssh-rsa", "key": "AAAAB3rsa"},
        {"name": "gitlab.vm", "type": "ssh-ed25519", "key": "AAAAC3ed"},
    ],
    "replication_mode": "none",
}
MASTER_GROUP_ID = "8f0b1b57-5f3c-4bd9-9a3c-0d9c2f5f7e11"
DEPLOYS_STATUS = "https://primary.vm:8170/code-manager/v1/deploys/status"
AGENT_RUN = ["puppet", "agent", "-t"]


def master_groups(params: dict[str, object]) -> list[dict[str, object]]:
    return [
        {
            "id": MASTER_GROUP_ID,
            "name": "PE Master",
            "classes": {"puppet_enterprise::profile::master": params},
        }
    ]


def test_pe_master_params_in_place_with_code_manager_answering_are_only_read(
    lab: FakeLab,
) -> None:
    admin_token(lab)
    lab.http.on("GET", GROUPS, json=master_groups({**MASTER_PARAMS, "other": 1}))
    lab.on_tcp(PRIMARY, 8170, True)
    lab.http.on("GET", DEPLOYS_STATUS, json={"deploys-status": {}})
    assert code_manager.ensure_pe_master_params(lab, KNOWN) == "already set"
    assert lab.timeline() == [
        f"lab pe {PRIMARY} {paths.ADMIN_TOKEN}",
        f"GET {GROUPS}",
        f"lab accepts_tcp {PRIMARY} 8170",
        f"lab pe {PRIMARY} {paths.ADMIN_TOKEN}",
        f"GET {DEPLOYS_STATUS}",
    ]
    assert lab.mutations() == []


@pytest.mark.parametrize(
    "current",
    [
        {},  # a fresh install
        {k: v for k, v in MASTER_PARAMS.items() if k != "r10k_known_hosts"},  # before PE 2023.3
        {**MASTER_PARAMS, "r10k_remote": "git@192.168.50.7:root/control-repo.git"},
    ],
)
def test_pe_master_params_not_in_place_are_set_then_applied_by_a_puppet_run(
    lab: FakeLab, current: dict[str, object]
) -> None:
    admin_token(lab)
    lab.http.on("GET", GROUPS, json=master_groups(current))
    lab.http.on("POST", f"{GROUPS}/{MASTER_GROUP_ID}", json={"id": MASTER_GROUP_ID})
    lab.primary.on(AGENT_RUN, exit_code=2, stdout="Notice: Applied catalog in 41.20 seconds\n")
    lab.on_tcp(PRIMARY, 8170, True)
    lab.http.on("GET", DEPLOYS_STATUS, json={})
    assert code_manager.ensure_pe_master_params(lab, KNOWN) == "applied"
    assert lab.mutations() == [
        f"POST {GROUPS}/{MASTER_GROUP_ID}",
        f"{PRIMARY}: puppet agent -t",
    ]
    [post] = lab.http.mutations()
    assert post.body == {"classes": {"puppet_enterprise::profile::master": MASTER_PARAMS}}
    assert lab.primary.calls == [Run(AGENT_RUN, root=True)]
    assert lab.timeline()[-2:] == [f"lab pe {PRIMARY} {paths.ADMIN_TOKEN}", f"GET {DEPLOYS_STATUS}"]


def test_pe_master_params_in_place_without_code_manager_get_a_puppet_run_only(
    lab: FakeLab,
) -> None:
    admin_token(lab)
    lab.http.on("GET", GROUPS, json=master_groups(MASTER_PARAMS))
    lab.on_tcp(PRIMARY, 8170, False, False, True)  # 8170 opens a while after the run
    lab.primary.on(AGENT_RUN)
    lab.http.on("GET", DEPLOYS_STATUS, json={})
    assert code_manager.ensure_pe_master_params(lab, KNOWN) == "already set"
    assert lab.mutations() == [f"{PRIMARY}: puppet agent -t"]
    assert len(lab.lab_calls("accepts_tcp")) == 3


def test_classifier_refusing_the_params_stops_before_the_puppet_run(lab: FakeLab) -> None:
    admin_token(lab)
    lab.http.on("GET", GROUPS, json=master_groups({}))
    not_an_array = "r10k_known_hosts is not an Array"
    lab.http.on_pe_error(
        "POST", f"{GROUPS}/{MASTER_GROUP_ID}", 422, "schema-violation", not_an_array
    )
    with pytest.raises(ApiError) as caught:
        code_manager.ensure_pe_master_params(lab, KNOWN)
    assert caught.value.status == 422 and not caught.value.transient
    assert lab.primary.calls == []


def test_failed_puppet_run_on_the_primary_raises(lab: FakeLab) -> None:
    admin_token(lab)
    lab.http.on("GET", GROUPS, json=master_groups({}))
    lab.http.on("POST", f"{GROUPS}/{MASTER_GROUP_ID}", json={})
    lab.primary.on(AGENT_RUN, exit_code=1, stderr="Error: Could not retrieve catalog\n")
    with pytest.raises(CommandFailed, match="Could not retrieve catalog"):
        code_manager.ensure_pe_master_params(lab, KNOWN)
    assert lab.lab_calls("accepts_tcp") == []


# --- ensure_code_deployed, deploy_code -----------------------------------------------------------

DEPLOYS_STATUS = "https://primary.vm:8170/code-manager/v1/deploys/status"


def _storage_holds(lab: FakeLab, signature: str) -> None:
    admin_token(lab)
    lab.http.on(
        "GET",
        DEPLOYS_STATUS,
        json={
            "file-sync-storage-status": {
                "deployed": [
                    {"environment": "staging", "deploy-signature": "f" * 40},
                    {"environment": "production", "deploy-signature": signature},
                ]
            }
        },
    )


def test_code_already_deployed_is_not_deployed_again(lab: FakeLab) -> None:
    lab.primary.on(LS_REMOTE, stdout=f"{HEAD}\trefs/heads/production\n")
    _storage_holds(lab, HEAD)
    assert code_manager.ensure_code_deployed(lab) == HEAD
    assert lab.primary.commands() == [LS_REMOTE]
    assert lab.http.requests == [Http("GET", DEPLOYS_STATUS)]


def test_code_behind_gitlab_is_deployed(lab: FakeLab) -> None:
    lab.primary.on(LS_REMOTE, stdout=f"{HEAD}\trefs/heads/production\n")
    _storage_holds(lab, "0" * 40)
    lab.primary.on(deploy_argv(PRIMARY), stdout=golden("code-deploy-wait.txt"))
    assert code_manager.ensure_code_deployed(lab) == "482f8d3adc76b5197306c5d4c8aa32aa8315694b"
    assert lab.primary.commands() == [LS_REMOTE, deploy_argv(PRIMARY)]


def deploy_argv(server: str) -> list[str]:
    # `puppet-code [GLOBAL_OPTIONS] <ACTION> [ACTION_OPTIONS]` (real-world-findings §4.2 row 7)
    options = f"--service-url https://{server}:8170/code-manager --token-file {paths.DEPLOY_TOKEN}"
    return shlex.split(f"puppet-code {options} deploy production --wait")


@pytest.mark.parametrize("server", [PRIMARY, "replica.vm"])
def test_deploy_names_the_token_file_and_the_server_and_returns_the_signature(
    lab: FakeLab, server: str
) -> None:
    lab.host(server).on(deploy_argv(server), stdout=golden("code-deploy-wait.txt"))
    signature = code_manager.deploy_code(lab, server)
    assert signature == "482f8d3adc76b5197306c5d4c8aa32aa8315694b"  # tests/golden's deploy
    assert lab.host(server).calls == [Run(deploy_argv(server), root=True)]


def test_deploy_that_failed_is_transient_with_code_managers_reason(lab: FakeLab) -> None:
    lab.primary.on(deploy_argv(PRIMARY), stdout=golden("code-deploy-failed.txt"))
    with pytest.raises(TransientError, match="Authentication failed for Git remote"):
        code_manager.deploy_code(lab)


def test_deploy_without_a_result_for_the_environment_is_transient(lab: FakeLab) -> None:
    other = golden("code-deploy-wait.txt").replace('"production"', '"staging"')
    lab.primary.on(deploy_argv(PRIMARY), stdout=other)
    with pytest.raises(TransientError, match="no result for the environment"):
        code_manager.deploy_code(lab)


# --- ensure_webhook ------------------------------------------------------------------------------

HOOKS = f"{GITLAB_API}/projects/7/hooks"


def hook_url(server: str, token: str = DEPLOY_TOKEN) -> str:
    # tutorial step 8, with the server's name (GitLab verifies its certificate against the lab CA)
    return f"https://{server}:8170/code-manager/v1/webhook?type=gitlab&token={token}"


def _hooks(lab: FakeLab, server: str, hooks: list[dict[str, object]]) -> None:
    gitlab_token(lab)
    lab.host(server).write(paths.DEPLOY_TOKEN, DEPLOY_TOKEN + "\n", mode=0o600)
    slack = {"id": 1, "url": "https://hooks.slack.invalid/x", "push_events": True}
    lab.http.on("GET", HOOKS, json=[slack, *hooks])


def _hook(hook_id: int, url: str, push: bool = True, tls: bool = True) -> dict[str, object]:
    return {"id": hook_id, "url": url, "push_events": push, "enable_ssl_verification": tls}


def test_webhook_with_the_current_url_is_left_alone(lab: FakeLab) -> None:
    _hooks(lab, PRIMARY, [_hook(5, hook_url(PRIMARY))])
    assert code_manager.ensure_webhook(lab, 7) == 5
    assert lab.http.requests == [Http("GET", HOOKS)]
    assert lab.mutations() == []


@pytest.mark.parametrize(
    ("url", "push_events"),
    [
        (hook_url(PRIMARY), True),  # after promotion: still the old primary
        (hook_url("replica.vm", "revoked-old-token"), True),  # an old deploy token
        (hook_url("replica.vm"), False),  # push events off
    ],
)
def test_webhook_out_of_date_is_updated_in_place(lab: FakeLab, url: str, push_events: bool) -> None:
    _hooks(lab, "replica.vm", [_hook(5, url, push_events)])
    lab.http.on("PUT", f"{HOOKS}/5", json={"id": 5})
    assert code_manager.ensure_webhook(lab, 7, "replica.vm") == 5
    assert lab.http.mutations() == [
        Http(
            "PUT",
            f"{HOOKS}/5",
            {"url": hook_url("replica.vm"), "push_events": True, "enable_ssl_verification": True},
        )
    ]


def test_webhook_without_tls_verification_is_updated_to_verify(lab: FakeLab) -> None:
    _hooks(lab, PRIMARY, [_hook(5, hook_url(PRIMARY), tls=False)])
    lab.http.on("PUT", f"{HOOKS}/5", json={"id": 5})
    assert code_manager.ensure_webhook(lab, 7) == 5
    assert lab.http.mutations()[0].body["enable_ssl_verification"] is True


@pytest.mark.parametrize("current_first", [True, False])
def test_every_other_code_manager_hook_is_removed(lab: FakeLab, current_first: bool) -> None:
    """After a promotion a second hook still points at the destroyed primary: pushes would fail
    on it (or, pointing at a live server, deploy twice)."""
    current, stale = _hook(5, hook_url("replica.vm")), _hook(6, hook_url(PRIMARY, "old-token"))
    other = {"id": 8, "url": "https://ci.example/hook", "push_events": True}  # not Code Manager's
    _hooks(lab, "replica.vm", [current, stale, other] if current_first else [stale, current, other])
    lab.http.on("DELETE", f"{HOOKS}/6", status=204)
    assert code_manager.ensure_webhook(lab, 7, "replica.vm") == 5
    assert lab.http.mutations() == [Http("DELETE", f"{HOOKS}/6")]


def test_missing_webhook_is_added_for_push_events(lab: FakeLab) -> None:
    _hooks(lab, PRIMARY, [])
    lab.http.on("POST", HOOKS, json={"id": 9}, status=201)
    assert code_manager.ensure_webhook(lab, 7) == 9
    assert lab.http.mutations() == [
        Http(
            "POST",
            HOOKS,
            {"url": hook_url(PRIMARY), "push_events": True, "enable_ssl_verification": True},
        )
    ]
    assert lab.command_lines() == [], "the deploy token goes only to GitLab's API"


def test_webhook_reads_the_deploy_token_of_the_server_it_points_at(lab: FakeLab) -> None:
    _hooks(lab, "replica.vm", [])
    lab.http.on("POST", HOOKS, json={"id": 9}, status=201)
    lab.primary.write(paths.DEPLOY_TOKEN, "the-old-primarys-token\n")
    code_manager.ensure_webhook(lab, 7, "replica.vm")
    assert lab.lab_calls("token") == [LabCall("token", ("replica.vm", paths.DEPLOY_TOKEN))]
    assert lab.http.mutations()[0].body["url"] == hook_url("replica.vm", DEPLOY_TOKEN)
