#!/usr/bin/env bash
# Install GitLab CE for the control repo.
# Env (from the Vagrantfile): GITLAB_EXTERNAL_URL, GITLAB_ROOT_PASSWORD (required, >= 8 chars).
set -euo pipefail

GITLAB_EXTERNAL_URL="${GITLAB_EXTERNAL_URL:-http://192.168.50.7}"
: "${GITLAB_ROOT_PASSWORD:?is not set; export it on the host, then run: vagrant provision gitlab.vm}"
if [ "${#GITLAB_ROOT_PASSWORD}" -lt 8 ]; then
  echo "gitlab.sh: GITLAB_ROOT_PASSWORD must have at least 8 characters" >&2
  exit 1
fi

if dpkg -s gitlab-ce >/dev/null 2>&1; then
  echo "gitlab.sh: GitLab CE is already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q curl ca-certificates openssh-server tzdata perl
curl -fsSL https://packages.gitlab.com/install/repositories/gitlab/gitlab-ce/script.deb.sh | bash

# The package's first reconfigure reads EXTERNAL_URL and GITLAB_ROOT_PASSWORD from the
# environment (exported, so the password is on no command line).
export EXTERNAL_URL="$GITLAB_EXTERNAL_URL"
export GITLAB_ROOT_PASSWORD
apt-get install -y -q gitlab-ce
unset GITLAB_ROOT_PASSWORD
rm -f /etc/gitlab/initial_root_password
echo "gitlab.sh: GitLab CE is up at ${GITLAB_EXTERNAL_URL}"
