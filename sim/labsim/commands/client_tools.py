"""PE client tools' configuration: where puppet-access, puppet-code and puppet job find their
services."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from labsim.commands.base import Ctx

if TYPE_CHECKING:
    pass


CLIENT_TOOLS = "/etc/puppetlabs/client-tools"


def write_client_tools(fs: Any, primary: str) -> None:
    """PE's global client-tools configuration on a PE-managed host, naming the primary it was
    installed against (help.puppet.com: "Configuring and using PE client tools",
    "Configure puppet-access", "Installing and configuring puppet-code"). Promotion does not
    rewrite it: PE's procedure tells the admin to update what points at the old primary
    (PE 2019.7-2021.7 dr_configure, "Promote a replica", step 3)."""
    ca = "/etc/puppetlabs/puppet/ssl/certs/ca.pem"
    confs = {
        "puppet-access.conf": {
            "service-url": f"https://{primary}:4433/rbac-api",
            "token-file": "~/.puppetlabs/token",
            "certificate-file": ca,
        },
        "puppet-code.conf": {
            "cacert": ca,
            "token-file": "~/.puppetlabs/token",
            "service-url": f"https://{primary}:8170/code-manager",
        },
        "orchestrator.conf": {"options": {"service-url": f"https://{primary}:8143"}},
    }
    for name, body in confs.items():
        fs.write(f"{CLIENT_TOOLS}/{name}", json.dumps(body, indent=2) + "\n", 0o644)


def _service_url(ctx: Ctx, conf: str, flag: str | None) -> str | None:
    """The service URL a client tool uses: --service-url, else the user's
    ~/.puppetlabs/client-tools/<conf>, else the global one."""
    if flag:
        return flag
    fs = ctx.vm.fs
    for path in (f"{ctx.home}/.puppetlabs/client-tools/{conf}", f"{CLIENT_TOOLS}/{conf}"):
        text = fs.read_text(path) if fs.can_read(ctx.user, path) else None
        if not text:
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        url = data.get("service-url") or (data.get("options") or {}).get("service-url")
        if url:
            return str(url)
    return None
