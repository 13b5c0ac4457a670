#!/usr/bin/env bash
# Every lab VM resolves every other by name: /etc/hosts entries from "IP=NAME" arguments.
# Idempotent: the block between the markers is rewritten on each run.
set -euo pipefail

begin="# BEGIN pe-dr-drill lab"
end="# END pe-dr-drill lab"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT

# Ubuntu maps the VM's own name to 127.0.1.1; Puppet needs it on the private address instead.
sed -e "/^${begin}\$/,/^${end}\$/d" -e '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts > "$tmp"
{
  echo "$begin"
  for entry in "$@"; do
    ip="${entry%%=*}"
    name="${entry#*=}"
    printf '%s %s %s\n' "$ip" "$name" "${name%%.*}"
  done
  echo "$end"
} >> "$tmp"
cat "$tmp" > /etc/hosts
echo "hosts.sh: /etc/hosts lists $# lab machines"
