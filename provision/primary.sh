#!/usr/bin/env bash
# Install Puppet Enterprise (monolithic primary) on Ubuntu 22.04.
# Env (from the Vagrantfile): PE_VERSION, PE_CONSOLE_PASSWORD (required), PE_DOWNLOAD_URL.
set -euo pipefail

PE_VERSION="${PE_VERSION:-2025.8.0}"
: "${PE_CONSOLE_PASSWORD:?is not set; export it on the host, then run: vagrant provision primary.vm}"

if [ -x /opt/puppetlabs/bin/puppet ] && systemctl is-active --quiet pe-puppetserver; then
  echo "primary.sh: Puppet Enterprise is already installed"
  exit 0
fi

ufw disable || true
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q curl ca-certificates

name="puppet-enterprise-${PE_VERSION}-ubuntu-22.04-amd64"
# The tutorial lab's download host (mrcmn/puppet-upandrun, PE 2025.8.0, Feb 2026); peadm uses
# https://s3.amazonaws.com/pe-builds/released/<V>/... (set PE_DOWNLOAD_URL to use another).
url="${PE_DOWNLOAD_URL:-https://pm.puppetlabs.com/puppet-enterprise/${PE_VERSION}/${name}.tar.gz}"
work="$(mktemp -d /root/pe-install.XXXXXX)"
trap 'rm -rf "$work"' EXIT  # also removes pe.conf and its password
cd "$work"
echo "primary.sh: downloading ${name}.tar.gz"
curl -fsSL --retry 5 -o "${name}.tar.gz" "$url"
tar -xzf "${name}.tar.gz"

# pe.conf holds the console password: created mode 600, written by the shell (printf is a
# builtin, so the password is on no command line) and never echoed.
pw="${PE_CONSOLE_PASSWORD//\\/\\\\}"
pw="${pw//\"/\\\"}"
(
  umask 077
  printf '{\n  "console_admin_password": "%s",\n' "$pw" > pe.conf
  printf '  "puppet_enterprise::puppet_master_host": "%s",\n' "primary.vm" >> pe.conf
  printf '  "pe_install::puppet_master_dnsaltnames": ["primary", "primary.vm"]\n}\n' >> pe.conf
)
chmod 600 pe.conf
unset pw

echo "primary.sh: running the PE installer (this takes a while)"
# -y: no prompt (peadm tasks/pe_install.sh runs it the same way).
"./${name}/puppet-enterprise-installer" -y -c "$work/pe.conf"

# Lab only: sign the certificates of every lab VM automatically.
echo '*.vm' > /etc/puppetlabs/puppet/autosign.conf
chown pe-puppet:pe-puppet /etc/puppetlabs/puppet/autosign.conf || true
chmod 644 /etc/puppetlabs/puppet/autosign.conf

# The installer asks for two agent runs to finish the configuration.
/opt/puppetlabs/bin/puppet agent -t || true
/opt/puppetlabs/bin/puppet agent -t || true
echo "primary.sh: Puppet Enterprise ${PE_VERSION} is installed on $(hostname -f)"
