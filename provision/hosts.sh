#!/usr/bin/env bash
# Every lab VM resolves every other by name: /etc/hosts entries from "IP=NAME" arguments.
# Usage: hosts.sh OWN_NAME IP=NAME...   (HOSTS_FILE overrides /etc/hosts, for tests)
# Idempotent: the block between the markers is rewritten on each run.
set -euo pipefail

hosts_file="${HOSTS_FILE:-/etc/hosts}"
own="$1"
shift
begin="# BEGIN pe-dr-drill lab"
end="# END pe-dr-drill lab"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT

# Ubuntu maps the VM's own name to 127.0.1.1, and Vagrant adds `127.0.N.1 NAME SHORT` at the first
# free N on every boot (hashicorp/vagrant lib/vagrant/util/guest_hosts.rb): Puppet needs the name
# on the private address, so every such line for this VM's own name goes.
awk -v begin="$begin" -v end="$end" -v own="$own" -v short="${own%%.*}" '
  $0 == begin { skip = 1; next }
  $0 == end { skip = 0; next }
  skip { next }
  $1 ~ /^127\.0\.[0-9]+\.1$/ && $1 != "127.0.0.1" {
    for (i = 2; i <= NF; i++) if ($i == own || $i == short) next
  }
  { print }
' "$hosts_file" > "$tmp"
{
  echo "$begin"
  for entry in "$@"; do
    ip="${entry%%=*}"
    name="${entry#*=}"
    printf '%s %s %s\n' "$ip" "$name" "${name%%.*}"
  done
  echo "$end"
} >> "$tmp"
cat "$tmp" > "$hosts_file"
echo "hosts.sh: ${hosts_file} lists $# lab machines"
