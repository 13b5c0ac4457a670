"""Where PE, GitLab and the drill keep things on the lab's hosts (see docs/lab-contract.md)."""

# ruff: noqa: S105 (paths of token files, not tokens)

CA_CERT = "/etc/puppetlabs/puppet/ssl/certs/ca.pem"
ADMIN_TOKEN = "/root/.puppetlabs/admin_token"
DEPLOY_TOKEN = "/root/.puppetlabs/deploy_token"
R10K_KEY = "/etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa"
ROOT_KNOWN_HOSTS = "/root/.ssh/known_hosts"
CONTROL_REPO_DIR = "/root/repo/control-repo"
LIVE_CODE = "/etc/puppetlabs/code/environments"
GITLAB_API_TOKEN = "/root/.pe-dr/api-token"
GITLAB_TOKEN_SCRIPT = "/root/.pe-dr/api-token.rb"
GITLAB_TRUSTED_CERTS = "/etc/gitlab/trusted-certs"
GITLAB_TRUSTED_CA_PREFIX = "pe-lab-ca"  # pe-lab-ca-1.crt, pe-lab-ca-2.crt: one certificate each

# What promotion needs on the replica, with PE's owners (mode 640); PE docs list all three.
SECRET_KEY_FILES: tuple[tuple[str, str], ...] = (
    (
        "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json",
        "pe-orchestration-services",
    ),
    (
        "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
        "pe-orchestration-services",
    ),
    ("/etc/puppetlabs/console-services/conf.d/secrets/keys.json", "pe-console-services"),
)

ALL_NODES_QUERY = "nodes {deactivated is null and expired is null}"
