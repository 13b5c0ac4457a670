"""The tutorial's step 2, settings for primary and replica: the admin's token and the agent
profile's server settings.

Plain Python over a Lab: look, act only if needed; tasks makes a Prefect task of each.
"""

from __future__ import annotations

from pe_dr.errors import ApiError, CommandFailed, ConfigError, PreconditionError
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.secrets import PE_CONSOLE_PASSWORD, get_secret

AGENT_PROFILE = "puppet_enterprise::profile::agent"


def token_valid(lab: Lab, server: str, token_file: str) -> bool:
    host = lab.host(server)
    if not host.exists(token_file, root=True):
        return False
    token = lab.token(server, token_file)
    with lab.pe(server, token_file=None) as pe:
        return pe.token_is_valid(token)


def puppet_access_login(lab: Lab, server: str, login: str, password: str, token_file: str) -> None:
    """`puppet access login` on `server`, the password on stdin; a refused password is permanent.

    The RBAC service is named explicitly: after a promotion the client-tools configuration may
    still name the destroyed primary (PE dr_configure, "Promote a replica", step 3)."""
    argv = ["puppet", "access", "login", "--username", login, "--lifetime", "360d"]
    argv += ["--token-file", token_file, "--service-url", f"https://{server}:4433/rbac-api"]
    try:
        lab.host(server).run(argv, root=True, stdin=password + "\n", timeout=120)
    except CommandFailed:
        with lab.pe(server, token_file=None) as pe:
            try:
                pe.login(login, password, lifetime="5m", label=None)
            except ApiError as exc:
                if exc.status == 401:
                    raise ConfigError(
                        f"PE on {server} rejected the password of {login!r} (check the Secret "
                        "block pe-console-password or PE_CONSOLE_PASSWORD)"
                        if login == lab.spec.console_admin
                        else f"PE on {server} rejected the password of {login!r}"
                    ) from None
        raise
    lab.host(server).run(["chmod", "600", token_file], root=True)


def ensure_admin_token(lab: Lab, server: str | None = None) -> str:
    """An admin RBAC token in its own token file on `server` (the primary by default)."""
    server = server or lab.spec.primary.name
    if token_valid(lab, server, paths.ADMIN_TOKEN):
        return "valid"
    password = get_secret(PE_CONSOLE_PASSWORD)
    puppet_access_login(lab, server, lab.spec.console_admin, password, paths.ADMIN_TOKEN)
    return "created"


def agent_profile(lab: Lab, group: str = "PE Infrastructure Agent") -> dict[str, object]:
    with lab.pe() as pe:
        found = pe.group_by_name(group)
    return dict(found.get("classes", {}).get(AGENT_PROFILE, {}))


def _host(entry: object) -> str:
    """The host of a server_list entry: `host`, `host:port` or `https://host:port/…`."""
    text = str(entry).strip().removeprefix("https://").split("/", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def ensure_agent_profile(lab: Lab) -> dict[str, object]:
    """PE Infrastructure Agent manages puppet.conf and lists the primary first (tutorial step 2)."""
    params = agent_profile(lab)
    primary = lab.spec.primary.name
    problems = []
    if params.get("manage_puppet_conf") is not True:
        problems.append("manage_puppet_conf is not true")
    for key in ("server_list", "primary_uris"):
        value = params.get(key)
        # PE's docs write ["primary.example.com"] (port implied), PE itself writes host:8140
        # (PE manual p.278, p.273-276; real-world-findings §4.2 row 10): the host is what counts
        if not isinstance(value, list) or not value or _host(value[0]) != primary:
            problems.append(f"{key} does not start with {primary}")
    if problems:
        raise PreconditionError(
            "PE Infrastructure Agent's puppet_enterprise::profile::agent is not as PE sets it up: "
            + "; ".join(problems)
        )
    return params
