#!/usr/bin/env bash
# The Debian packages the test tiers need. As root, installs the missing ones (apt-get, quiet,
# non-interactive, no recommends); otherwise names them in one line and exits 0: the tiers that
# need them then skip, saying why. `.ci/run` and `make test` both run it.
set -euo pipefail

# openssh-server, openssh-client: Host is tested against a real sshd; the real-Puppet agent is
#   reached over SSH like a lab VM
# sudo: root login sessions (`sudo -n -i`), as on a lab VM
# git: the control repo
# postgresql: the deployment tests and the flows tier's drills run a Prefect server on PostgreSQL 15
# puppet-agent, puppetserver, ruby: the real-Puppet tier (Debian 12's Puppet 7; puppetserver brings
#   its Java runtime); ruby runs the control repo's config_version script as PE's ruby would
# puppetdb, puppet-terminus-puppetdb: the real-Puppet tier's PuppetDB pair (Debian 12's PuppetDB 7.12
#   on the tier's own PostgreSQL cluster) and the puppetservers' terminus that broadcasts to both
# dbconfig-no-thanks: stops debconf from configuring a database for puppetdb; the tier makes its own
# curl: the product's on-host reads (HostCurlTransport) run curl with the host's certificate
# util-linux: unshare, for the real-Puppet tier's private namespaces (essential on Debian)
# vagrant: the real Vagrant (2.3.4) validates the project's Vagrantfile (no VirtualBox here)
# chromium: the auditors' HTML report (`pe-dr report --html`) is rendered headless and checked
# nftables, iproute2: the canary drill's firewall block and a packet-dropping host for pre-flight's
#   connect check, both in network namespaces the tests make (`nft`, `ip netns`)
packages=(openssh-server openssh-client sudo git postgresql puppet-agent puppetserver ruby util-linux
    vagrant chromium nftables iproute2 dbconfig-no-thanks puppetdb puppet-terminus-puppetdb curl)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-test-packages: not a Debian system; the tiers that need ${packages[*]} will skip"
    exit 0
fi
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-packages: missing Debian packages: ${missing[*]} (run this script as root to install them); the tiers that need them will skip"
    exit 0
fi
echo "install-test-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
