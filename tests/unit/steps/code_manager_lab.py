"""What the Code Manager tests share: the lab's tokens, addresses and keys, and golden files."""

from __future__ import annotations

from pathlib import Path

from pe_dr.lab import paths

from ..fake_lab import FakeLab

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
LS_REMOTE = ["git", "-c", GIT_SSH, "ls-remote", REMOTE, "refs/heads/production"]
HEAD = "9f6c5881a8e0c1f2d3b4a5968778695a4b3c2d1e"  # production on GitLab
PUBLIC_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC3r10kkey pe-dr"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def admin_token(lab: FakeLab, server: str = PRIMARY) -> None:
    lab.host(server).write(paths.ADMIN_TOKEN, ADMIN_TOKEN + "\n", mode=0o600)


def gitlab_token(lab: FakeLab) -> None:
    lab.gitlab_vm.write(paths.GITLAB_API_TOKEN, GITLAB_TOKEN + "\n", mode=0o600)
