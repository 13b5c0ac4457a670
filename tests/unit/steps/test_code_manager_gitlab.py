"""Code Manager actions on the GitLab side act only when needed (tutorial 02-codemanager-config):
the GitLab token, settings, CA, SSH key, project, commit and push."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import pe_dr
from pe_dr.errors import ApiError, CommandFailed, PreconditionError
from pe_dr.lab import paths
from pe_dr.steps import code_manager

from ..fake_lab import FakeLab
from ..fakes import Exists, FakeHost, Http, LabCall, Put, Read, Run, ls_1, pem, rm_f
from .code_manager_lab import (
    GIT_SSH,
    GITLAB_API,
    GITLAB_TOKEN,
    HEAD,
    LS_REMOTE,
    PRIMARY,
    PUBLIC_KEY,
    REMOTE,
    gitlab_token,
)

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
