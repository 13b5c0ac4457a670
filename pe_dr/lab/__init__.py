"""The lab: its spec, its VMs (Vagrant, VirtualBox), SSH to its hosts, where things live on them."""
