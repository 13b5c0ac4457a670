#!/bin/sh
# Configuration version <compiling server>-<environment>-<commit>, so a run shows who compiled what.
ruby=/opt/puppetlabs/puppet/bin/ruby
if [ -e "$1/$2/.r10k-deploy.json" ] && [ -x "$ruby" ]; then
  exec "$ruby" "$1/$2/scripts/config_version-r10k.rb" "$1" "$2"
fi
date +%s
