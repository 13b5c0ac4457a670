"""Code Manager actions act only when needed (tutorial 02-codemanager-config): the agent profile,
the r10k key, GitLab's host keys, the GitLab token, settings, CA, SSH key, project and push, the
PE Master parameters, the deploy and the webhook."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import pe_dr
from pe_dr.errors import ApiError, CommandFailed, PreconditionError, TransientError
from pe_dr.lab import paths
from pe_dr.parsing.pe import KnownHost
from pe_dr.steps import code_manager, primary_settings

from ..fakes import (
    Exists,
    FakeHost,
    FakeLab,
    Http,
    LabCall,
    Put,
    Read,
    Run,
    ls_1,
    pem,
    rm_f,
    stat_mode_owner,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
PRIMARY = "primary.vm"
ADMIN_TOKEN = "0VZnKMTkVqcBh1X7JkP9-admin-token"
DEPLOY_TOKEN = "deploy-token-8a1be2c44e"
GITLAB_TOKEN = "glpat-existing-0123456789"
GROUPS = "https://primary.vm:4433/classifier-api/v1/groups"
GITLAB_API = "http://gitlab.vm/api/v4"
REMOTE = "git@gitlab.vm:root/control-repo.git"  # the tutorial's r10k_remote
# git reaches GitLab with the r10k key only, checking GitLab's host key against root's known_hosts
GIT_SSH = (
    "core.sshCommand=ssh -i /etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa "
    "-o IdentitiesOnly=yes -o UserKnownHostsFile=/root/.ssh/known_hosts "
    "-o StrictHostKeyChecking=yes"
)
PUBLIC_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC3r10kkey pe-dr"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def admin_token(lab: FakeLab, server: str = PRIMARY) -> None:
    lab.host(server).write(paths.ADMIN_TOKEN, ADMIN_TOKEN + "\n", mode=0o600)


def gitlab_token(lab: FakeLab) -> None:
    lab.gitlab_vm.write(paths.GITLAB_API_TOKEN, GITLAB_TOKEN + "\n", mode=0o600)


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


# --- ensure_gitlab_api_token ---------------------------------------------------------------------

RUNNER = ["gitlab-rails", "runner", paths.GITLAB_TOKEN_SCRIPT]


def test_gitlab_token_that_gitlab_accepts_is_kept(lab: FakeLab) -> None:
    gitlab_token(lab)
    lab.http.on("GET", f"{GITLAB_API}/user", json={"id": 1, "username": "root"})
    assert code_manager.ensure_gitlab_api_token(lab) == "valid"
    assert lab.http.requests == [Http("GET", f"{GITLAB_API}/user")]
    assert lab.http.requests[0].header("PRIVATE-TOKEN") == GITLAB_TOKEN
    assert lab.mutations() == []


def _script_bootstrap(lab: FakeLab) -> None:
    lab.gitlab_vm.on(RUNNER)
    lab.gitlab_vm.on(["rm", "-f", paths.GITLAB_TOKEN_SCRIPT], rm_f)


@pytest.mark.parametrize("present", [False, True])
def test_missing_or_refused_gitlab_token_is_made_by_file_never_on_a_command_line(
    lab: FakeLab, present: bool
) -> None:
    if present:
        gitlab_token(lab)
    _script_bootstrap(lab)
    lab.http.on(
        "GET",
        f"{GITLAB_API}/user",
        *([httpx.Response(401, json={"message": "401 Unauthorized"})] if present else []),
        httpx.Response(200, json={"id": 1, "username": "root"}),
    )
    assert code_manager.ensure_gitlab_api_token(lab) == "created"
    token_put, script_put = lab.gitlab_vm.puts()
    assert (token_put.path, token_put.mode, token_put.owner, token_put.group) == (
        paths.GITLAB_API_TOKEN,
        0o600,
        "root",
        "root",
    )
    token = token_put.content.decode().strip()
    assert token.startswith("glpat-") and token != GITLAB_TOKEN
    # the Rails script reads the token from the file; it is removed whatever happens
    assert (script_put.path, script_put.mode) == (paths.GITLAB_TOKEN_SCRIPT, 0o600)
    assert f"File.read('{paths.GITLAB_API_TOKEN}')" in script_put.content.decode()
    assert token not in script_put.content.decode()
    assert lab.gitlab_vm.commands() == [RUNNER, ["rm", "-f", paths.GITLAB_TOKEN_SCRIPT]]
    assert paths.GITLAB_TOKEN_SCRIPT not in lab.gitlab_vm.files
    assert not any(token in line for line in lab.command_lines())
    assert lab.http.requests[-1].header("PRIVATE-TOKEN") == token, "the new token is proved"


def test_gitlab_token_script_is_removed_when_rails_fails(lab: FakeLab) -> None:
    lab.gitlab_vm.on(RUNNER, exit_code=1, stderr="ActiveRecord::RecordInvalid\n")
    lab.gitlab_vm.on(["rm", "-f", paths.GITLAB_TOKEN_SCRIPT], rm_f)
    with pytest.raises(CommandFailed):
        code_manager.ensure_gitlab_api_token(lab)
    assert lab.gitlab_vm.commands()[-1] == ["rm", "-f", paths.GITLAB_TOKEN_SCRIPT]
    assert paths.GITLAB_TOKEN_SCRIPT not in lab.gitlab_vm.files


@pytest.mark.parametrize("status", [403, 502])
def test_gitlab_failing_otherwise_does_not_replace_the_token(lab: FakeLab, status: int) -> None:
    gitlab_token(lab)
    lab.http.on("GET", f"{GITLAB_API}/user", json={"message": "nope"}, status=status)
    with pytest.raises(ApiError) as caught:
        code_manager.ensure_gitlab_api_token(lab)
    assert caught.value.status == status
    assert lab.mutations() == []


# --- ensure_gitlab_settings ----------------------------------------------------------------------

SETTINGS = f"{GITLAB_API}/application/settings"
WANTED_SETTINGS = {  # tutorial step 7: local requests from hooks on, DNS rebinding protection off
    "allow_local_requests_from_web_hooks_and_services": True,
    "dns_rebinding_protection_enabled": False,
}


def test_gitlab_settings_already_set_are_only_read(lab: FakeLab) -> None:
    gitlab_token(lab)
    lab.http.on("GET", SETTINGS, json={**WANTED_SETTINGS, "signup_enabled": True})
    assert code_manager.ensure_gitlab_settings(lab) == "already set"
    assert lab.http.requests == [Http("GET", SETTINGS)]
    assert lab.http.requests[0].header("PRIVATE-TOKEN") == GITLAB_TOKEN


@pytest.mark.parametrize(
    "current",
    [
        {"allow_local_requests_from_web_hooks_and_services": False},  # GitLab's defaults
        {"allow_local_requests_from_web_hooks_and_services": True},
        {"dns_rebinding_protection_enabled": False},
    ],
)
def test_gitlab_settings_not_set_are_put(lab: FakeLab, current: dict[str, bool]) -> None:
    gitlab_token(lab)
    lab.http.on("GET", SETTINGS, json={"dns_rebinding_protection_enabled": True, **current})
    lab.http.on("PUT", SETTINGS, json=WANTED_SETTINGS)
    assert code_manager.ensure_gitlab_settings(lab) == "updated"
    assert lab.http.mutations() == [Http("PUT", SETTINGS, WANTED_SETTINGS)]


# --- ensure_gitlab_trusts_lab_ca -----------------------------------------------------------------

TRUSTED = paths.GITLAB_TRUSTED_CERTS
ROOT_CA, INTERMEDIATE_CA = pem("PE root CA"), pem("PE intermediate CA")


def _ca(lab: FakeLab, bundle: bytes = ROOT_CA + INTERMEDIATE_CA) -> FakeHost:
    lab.primary.write(paths.CA_CERT, bundle)
    gitlab = lab.gitlab_vm
    gitlab.on(["ls", "-1", TRUSTED], ls_1)
    gitlab.on(["gitlab-ctl", "reconfigure"])
    return gitlab


def test_gitlab_holding_each_ca_certificate_in_its_own_file_is_not_reconfigured(
    lab: FakeLab,
) -> None:
    gitlab = _ca(lab)
    gitlab.write(f"{TRUSTED}/pe-lab-ca-1.crt", ROOT_CA)
    gitlab.write(f"{TRUSTED}/pe-lab-ca-2.crt", INTERMEDIATE_CA)
    gitlab.write(f"{TRUSTED}/corporate-proxy.crt", pem("someone else's"))
    assert code_manager.ensure_gitlab_trusts_lab_ca(lab) == "already trusted"
    assert gitlab.calls == [
        Exists(TRUSTED, root=True),
        Run(["ls", "-1", TRUSTED], root=True),
        Read(f"{TRUSTED}/pe-lab-ca-1.crt", root=True),
        Read(f"{TRUSTED}/pe-lab-ca-2.crt", root=True),
    ]
    assert lab.lab_calls("ca_pem") == [LabCall("ca_pem", (PRIMARY,))]


def test_gitlab_without_the_ca_gets_one_file_per_certificate_then_reconfigures(
    lab: FakeLab,
) -> None:
    gitlab = _ca(lab)
    said = code_manager.ensure_gitlab_trusts_lab_ca(lab)
    assert "2" in said
    assert gitlab.mutations() == [
        Put(f"{TRUSTED}/pe-lab-ca-1.crt", ROOT_CA, mode=0o644, owner="root", group="root"),
        Put(f"{TRUSTED}/pe-lab-ca-2.crt", INTERMEDIATE_CA, mode=0o644, owner="root", group="root"),
        Run(["gitlab-ctl", "reconfigure"], root=True),
    ]


def test_whole_bundle_in_one_file_from_an_old_release_is_removed(lab: FakeLab) -> None:
    gitlab = _ca(lab)
    gitlab.on(["rm", "-f", f"{TRUSTED}/pe-lab-ca.crt"], rm_f)
    gitlab.write(f"{TRUSTED}/pe-lab-ca.crt", ROOT_CA + INTERMEDIATE_CA)
    gitlab.write(f"{TRUSTED}/pe-lab-ca-1.crt", ROOT_CA)
    gitlab.write(f"{TRUSTED}/pe-lab-ca-2.crt", INTERMEDIATE_CA)
    gitlab.write(f"{TRUSTED}/corporate-proxy.crt", pem("someone else's"))
    code_manager.ensure_gitlab_trusts_lab_ca(lab)
    assert gitlab.mutations() == [
        Run(["rm", "-f", f"{TRUSTED}/pe-lab-ca.crt"], root=True),
        Run(["gitlab-ctl", "reconfigure"], root=True),
    ]
    assert sorted(p.rsplit("/", 1)[1] for p in gitlab.files) == [
        "corporate-proxy.crt",
        "pe-lab-ca-1.crt",
        "pe-lab-ca-2.crt",
    ]


def test_only_the_certificate_that_changed_is_rewritten(lab: FakeLab) -> None:
    renewed = pem("PE intermediate CA, renewed")
    gitlab = _ca(lab, ROOT_CA + renewed)
    gitlab.write(f"{TRUSTED}/pe-lab-ca-1.crt", ROOT_CA)
    gitlab.write(f"{TRUSTED}/pe-lab-ca-2.crt", INTERMEDIATE_CA)
    code_manager.ensure_gitlab_trusts_lab_ca(lab)
    assert gitlab.mutations() == [
        Put(f"{TRUSTED}/pe-lab-ca-2.crt", renewed, mode=0o644, owner="root", group="root"),
        Run(["gitlab-ctl", "reconfigure"], root=True),
    ]


def test_ca_file_without_a_certificate_is_refused_before_gitlab_is_touched(lab: FakeLab) -> None:
    gitlab = _ca(lab, b"")
    with pytest.raises(PreconditionError, match=r"ca\.pem on primary\.vm holds no certificate"):
        code_manager.ensure_gitlab_trusts_lab_ca(lab)
    assert gitlab.calls == []


# --- ensure_gitlab_ssh_key -----------------------------------------------------------------------


def test_r10k_key_already_on_gitlab_is_not_added_again(lab: FakeLab) -> None:
    gitlab_token(lab)
    body = " ".join(PUBLIC_KEY.split()[:2])
    lab.http.on("GET", f"{GITLAB_API}/user/keys", json=[{"id": 3, "key": body + " root@elsewhere"}])
    assert code_manager.ensure_gitlab_ssh_key(lab, PUBLIC_KEY) == "present"
    assert lab.http.requests == [Http("GET", f"{GITLAB_API}/user/keys")]


def test_r10k_key_missing_on_gitlab_is_added_to_root(lab: FakeLab) -> None:
    gitlab_token(lab)
    lab.http.on("GET", f"{GITLAB_API}/user/keys", json=[{"id": 3, "key": "ssh-ed25519 AAAAother"}])
    lab.http.on("POST", f"{GITLAB_API}/user/keys", json={"id": 4}, status=201)
    assert code_manager.ensure_gitlab_ssh_key(lab, PUBLIC_KEY) == "added"
    [added] = lab.http.mutations()
    assert added.url == f"{GITLAB_API}/user/keys"
    assert added.body["key"] == PUBLIC_KEY
    assert PRIMARY in added.body["title"]


# --- ensure_control_repo_project -----------------------------------------------------------------

PROJECT = f"{GITLAB_API}/projects/root%2Fcontrol-repo"


def test_existing_control_repo_project_is_only_looked_up(lab: FakeLab) -> None:
    gitlab_token(lab)
    lab.http.on("GET", PROJECT, json={"id": 7, "path_with_namespace": "root/control-repo"})
    assert code_manager.ensure_control_repo_project(lab) == 7
    assert lab.http.requests == [Http("GET", PROJECT)]


def test_missing_control_repo_project_is_created_empty_and_private(lab: FakeLab) -> None:
    gitlab_token(lab)
    lab.http.on("GET", PROJECT, json={"message": "404 Project Not Found"}, status=404)
    lab.http.on("POST", f"{GITLAB_API}/projects", json={"id": 12}, status=201)
    assert code_manager.ensure_control_repo_project(lab) == 12
    assert lab.http.mutations() == [
        Http("POST", f"{GITLAB_API}/projects", {"name": "control-repo", "visibility": "private"})
    ]


# --- git_commit, ensure_control_repo_pushed ------------------------------------------------------

REPO = paths.CONTROL_REPO_DIR
LS_REMOTE = ["git", "-c", GIT_SSH, "ls-remote", REMOTE, "refs/heads/production"]
COMMIT = [
    "git",
    "-C",
    REPO,
    "-c",
    "user.name=pe-dr-drill",
    "-c",
    "user.email=pe-dr-drill@localhost",
    "commit",
    "-m",
    "Control repo for the DR drill",
]
PUSH = ["git", "-C", REPO, "-c", GIT_SSH, "push", "origin", "production"]
HEAD = "9f6c5881a8e0c1f2d3b4a5968778695a4b3c2d1e"


def test_commit_of_staged_changes_is_true(lab: FakeLab) -> None:
    lab.primary.on(COMMIT, stdout="[production 9f6c588] Control repo for the DR drill\n")
    assert code_manager.git_commit(lab, "Control repo for the DR drill") is True
    assert lab.primary.calls == [Run(COMMIT, root=True)]


def test_commit_with_nothing_staged_is_false(lab: FakeLab) -> None:
    lab.primary.on(
        COMMIT, exit_code=1, stdout="On branch production\nnothing to commit, working tree clean\n"
    )
    assert code_manager.git_commit(lab, "Control repo for the DR drill") is False


@pytest.mark.parametrize(
    ("code", "stderr"),
    [
        (1, "error: pathspec 'x' did not match any file(s) known to git\n"),
        (128, "fatal: not a git repository (or any of the parent directories): .git\n"),
    ],
)
def test_commit_failing_otherwise_raises(lab: FakeLab, code: int, stderr: str) -> None:
    lab.primary.on(COMMIT, exit_code=code, stderr=stderr)
    with pytest.raises(CommandFailed) as caught:
        code_manager.git_commit(lab, "Control repo for the DR drill")
    assert caught.value.exit_code == code
    assert stderr.split(":")[0] in caught.value.message


def test_commit_exit_1_without_nothing_to_commit_is_not_retried(lab: FakeLab) -> None:
    lab.primary.on(COMMIT, exit_code=1, stderr="Author identity unknown\n")
    with pytest.raises(CommandFailed) as caught:
        code_manager.git_commit(lab, "Control repo for the DR drill")
    assert not caught.value.transient


REV_PARSE = ["git", "-C", REPO, "rev-parse", "HEAD"]
CLONE = ["git", "-c", GIT_SSH, "clone", "--branch", "production", REMOTE, REPO]
PULL = ["git", "-C", REPO, "-c", GIT_SSH, "pull", "--ff-only", "origin", "production"]


def test_control_repo_already_on_gitlab_and_cloned_at_its_head_is_only_looked_up(
    lab: FakeLab,
) -> None:
    lab.primary.on(LS_REMOTE, stdout=f"{HEAD}\trefs/heads/production\n")
    lab.primary.write(f"{REPO}/.git", "")
    lab.primary.on(REV_PARSE, stdout=HEAD + "\n")
    assert code_manager.ensure_control_repo_pushed(lab) == HEAD
    assert lab.primary.commands() == [LS_REMOTE, REV_PARSE]
    assert lab.mutations() == []


def test_a_new_primary_without_the_clone_clones_the_control_repo(lab: FakeLab) -> None:
    # after a promotion the clone lived on the lost primary; the replication check commits here
    lab.primary.on(LS_REMOTE, stdout=f"{HEAD}\trefs/heads/production\n")
    lab.primary.on(CLONE)
    assert code_manager.ensure_control_repo_pushed(lab) == HEAD
    assert lab.primary.commands() == [LS_REMOTE, CLONE]


def test_a_clone_behind_gitlab_is_fast_forwarded(lab: FakeLab) -> None:
    lab.primary.on(LS_REMOTE, stdout=f"{HEAD}\trefs/heads/production\n")
    lab.primary.write(f"{REPO}/.git", "")
    lab.primary.on(REV_PARSE, stdout="0" * 40 + "\n")
    lab.primary.on(PULL)
    assert code_manager.ensure_control_repo_pushed(lab) == HEAD
    assert lab.primary.commands() == [LS_REMOTE, REV_PARSE, PULL]


def _skeleton() -> dict[str, bytes]:
    root = Path(pe_dr.__file__).parent / "control_repo"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _push_script(lab: FakeLab, ls_remote: str = "") -> None:
    lab.primary.on(LS_REMOTE, stdout=ls_remote)
    lab.primary.on(["git", "-C", REPO, "init", "-b", "production"])
    lab.primary.on(["git", "-C", REPO, "remote", "add", "origin", REMOTE])
    lab.primary.on(["git", "-C", REPO, "add", "-A"])
    lab.primary.on(PUSH)
    lab.primary.on(["git", "-C", REPO, "rev-parse", "HEAD"], stdout=HEAD + "\n")


@pytest.mark.parametrize(
    "ls_remote", ["", f"{HEAD}\trefs/heads/main\n"]
)  # an empty project, or one whose only branch is not the environment
def test_control_repo_not_on_gitlab_is_made_from_the_skeleton_and_pushed(
    lab: FakeLab, ls_remote: str
) -> None:
    _push_script(lab, ls_remote)
    lab.primary.on(COMMIT, stdout="[production (root-commit) 9f6c588] Control repo\n")
    assert code_manager.ensure_control_repo_pushed(lab) == HEAD
    skeleton = _skeleton()
    assert {p.path: p.content for p in lab.primary.puts()} == {
        f"{REPO}/{name}": content for name, content in skeleton.items()
    }
    for put in lab.primary.puts():
        assert (put.mode, put.owner) == (0o755 if put.path.endswith(".sh") else 0o644, "root")
    calls = lab.primary.calls
    assert calls[:2] == [Run(LS_REMOTE, root=True), Exists(f"{REPO}/.git", root=True)]
    assert all(isinstance(c, Put) for c in calls[2 : 2 + len(skeleton)]), "files before git init"
    assert calls[2 + len(skeleton) :] == [
        Run(["git", "-C", REPO, "init", "-b", "production"], root=True),
        Run(["git", "-C", REPO, "remote", "add", "origin", REMOTE], root=True),
        Run(["git", "-C", REPO, "add", "-A"], root=True),
        Run(COMMIT, root=True),
        Run(PUSH, root=True),
        Run(["git", "-C", REPO, "rev-parse", "HEAD"], root=True),
    ]


def test_control_repo_made_by_an_earlier_attempt_is_pushed_without_a_new_init(
    lab: FakeLab,
) -> None:
    _push_script(lab)
    lab.primary.dirs.add(f"{REPO}/.git")
    lab.primary.on(COMMIT, exit_code=1, stdout="nothing to commit, working tree clean\n")
    assert code_manager.ensure_control_repo_pushed(lab) == HEAD
    assert lab.primary.puts() == []
    assert lab.primary.mutations() == [
        Run(["git", "-C", REPO, "add", "-A"], root=True),
        Run(COMMIT, root=True),
        Run(PUSH, root=True),
    ]


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
    lab.http.on(
        "POST",
        f"{GROUPS}/{MASTER_GROUP_ID}",
        json={"kind": "schema-violation", "msg": "r10k_known_hosts is not an Array"},
        status=422,
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
    return [
        "puppet-code",
        "--service-url",
        f"https://{server}:8170/code-manager",
        "--token-file",
        paths.DEPLOY_TOKEN,
        "deploy",
        "production",
        "--wait",
    ]


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
