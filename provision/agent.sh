#!/usr/bin/env bash
# Install the Puppet agent from the PE primary (replica.vm starts as a plain agent too).
# Env (from the Vagrantfile): PE_PRIMARY (default primary.vm).
set -euo pipefail

PE_PRIMARY="${PE_PRIMARY:-primary.vm}"
if [ -x /opt/puppetlabs/bin/puppet ]; then
  echo "agent.sh: the Puppet agent is already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q curl ca-certificates

echo "agent.sh: waiting for ${PE_PRIMARY}:8140"
for _ in $(seq 1 120); do
  if curl -ks -o /dev/null "https://${PE_PRIMARY}:8140/packages/current/install.bash"; then
    break
  fi
  sleep 5
done

# -k (no TLS verification) only here, at bootstrap: the lab CA is not on this VM yet, so there is
# nothing to verify against. This is the install method PE documents for new agents; the script
# installs the CA it fetched, and from then on every connection to the primary is verified.
curl -k -fsSL "https://${PE_PRIMARY}:8140/packages/current/install.bash" | bash

# The primary autosigns *.vm, so the first run gets the certificate and applies the catalog.
/opt/puppetlabs/bin/puppet agent -t || true
echo "agent.sh: $(hostname -f) is a Puppet agent of ${PE_PRIMARY}"
