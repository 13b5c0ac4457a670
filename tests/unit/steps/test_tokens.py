"""Token actions act only when needed, and no password or token ever reaches a command line:
the admin token, the deploy user and its role, the deploy token."""

from __future__ import annotations

import re
import shlex

import httpx
import pytest

from pe_dr.errors import CommandFailed, ConfigError, PermanentError, PreconditionError
from pe_dr.lab import paths
from pe_dr.steps import code_manager, primary_settings

from ..fake_lab import FakeLab
from ..fakes import Exists, Http, Reply, Run, chmod

PRIMARY = "primary.vm"
ADMIN_TOKEN = "0VZnKMTkVqcBh1X7JkP9-admin-token"
OLD_TOKEN = "expired-token-5f2c91d0b7"
CONSOLE_PASSWORD = "Puppetlabs+1"  # the tutorial lab's console password
DEPLOY_TOKEN = "deploy-token-8a1be2c44e"
RBAC = "https://primary.vm:4433/rbac-api"
AUTHENTICATE = f"{RBAC}/v2/auth/token/authenticate"
ROLES = [
    {"id": 1, "display_name": "Administrators"},
    {"id": 4, "display_name": "Code Deployers"},
]
DEPLOY_USER_ID = "42bf351c-f9ec-40af-84ad-e976fec7f4bd"


def login_argv(user: str, token_file: str, server: str = PRIMARY) -> list[str]:
    """`puppet access login` as the tutorial runs it, the user and token file named, the RBAC
    service named explicitly (pe-dr-interfaces §0)."""
    options = (
        f"--lifetime 360d --token-file {token_file} --service-url https://{server}:4433/rbac-api"
    )
    return ["puppet", "access", "login", "--username", user, *shlex.split(options)]


def saves_token(token_file: str, token: str) -> Reply:
    """`puppet access login` that succeeds: it writes the token file."""

    def effect(host: object) -> None:
        host.write(token_file, token + "\n", mode=0o644)  # type: ignore[attr-defined]

    return Reply(0, f"Access token saved to: {token_file}\n", effect=effect)


LOGIN_REFUSED = Reply(
    1, "", "Error: Invalid username or password.\n"
)  # what the CLI prints; the API says the same as a 401


def authenticate(lab: FakeLab, status: int) -> None:
    body = {"login": "admin"} if status == 200 else {"kind": "puppetlabs.rbac/token-revoked"}
    lab.http.on("POST", AUTHENTICATE, json=body, status=status)


# --- ensure_admin_token ----------------------------------------------------------------------


def test_valid_admin_token_is_kept_without_asking_for_the_password(lab: FakeLab) -> None:
    lab.primary.write(paths.ADMIN_TOKEN, ADMIN_TOKEN + "\n", mode=0o600)
    authenticate(lab, 200)
    # no PE_CONSOLE_PASSWORD is set: a valid token must not need it
    assert primary_settings.ensure_admin_token(lab) == "valid"
    assert lab.primary.calls == [Exists(paths.ADMIN_TOKEN, root=True)]
    assert lab.http.requests == [
        Http("POST", AUTHENTICATE, {"token": ADMIN_TOKEN, "update_last_activity?": False})
    ]
    assert lab.http.requests[0].header("X-Authentication") is None, "checked without a token"
    assert lab.mutations() == []


def test_missing_admin_token_is_made_with_the_password_on_stdin(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", CONSOLE_PASSWORD)
    lab.primary.on(login_argv("admin", paths.ADMIN_TOKEN), saves_token(paths.ADMIN_TOKEN, "t0k"))
    lab.primary.on(["chmod", "600", paths.ADMIN_TOKEN], chmod)
    assert primary_settings.ensure_admin_token(lab) == "created"
    assert lab.primary.calls == [
        Exists(paths.ADMIN_TOKEN, root=True),
        Run(login_argv("admin", paths.ADMIN_TOKEN), root=True, stdin=CONSOLE_PASSWORD + "\n"),
        Run(["chmod", "600", paths.ADMIN_TOKEN], root=True),
    ]
    assert lab.primary.files[paths.ADMIN_TOKEN].mode == 0o600
    assert lab.http.requests == [], "nothing to check when there is no token file"
    assert not any(CONSOLE_PASSWORD in line for line in lab.command_lines())


@pytest.mark.parametrize("status", [400, 401, 403])  # malformed, old releases, revoked/expired
def test_refused_admin_token_is_replaced(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", CONSOLE_PASSWORD)
    lab.primary.write(paths.ADMIN_TOKEN, OLD_TOKEN + "\n", mode=0o600)
    authenticate(lab, status)
    lab.primary.on(login_argv("admin", paths.ADMIN_TOKEN), saves_token(paths.ADMIN_TOKEN, "new"))
    lab.primary.on(["chmod", "600", paths.ADMIN_TOKEN], chmod)
    assert primary_settings.ensure_admin_token(lab) == "created"
    assert lab.mutations() == [
        f"{PRIMARY}: {' '.join(login_argv('admin', paths.ADMIN_TOKEN))}",
        f"{PRIMARY}: chmod 600 {paths.ADMIN_TOKEN}",
    ]


def test_admin_token_on_the_replica_is_made_against_the_replica(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", CONSOLE_PASSWORD)
    argv = login_argv("admin", paths.ADMIN_TOKEN, server="replica.vm")
    lab.replica.on(argv, saves_token(paths.ADMIN_TOKEN, "replica-token"))
    lab.replica.on(["chmod", "600", paths.ADMIN_TOKEN], chmod)
    assert primary_settings.ensure_admin_token(lab, "replica.vm") == "created"
    assert lab.replica.commands() == [argv, ["chmod", "600", paths.ADMIN_TOKEN]]
    assert lab.primary.calls == []


def test_refused_console_password_is_one_sentence_naming_the_secret_block(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", "Wrong-Passw0rd!")
    lab.primary.on(login_argv("admin", paths.ADMIN_TOKEN), LOGIN_REFUSED)
    refused = ("puppetlabs.rbac/authentication-failed", "invalid credentials")
    lab.http.on_pe_error("POST", f"{RBAC}/v1/auth/token", 401, *refused)
    with pytest.raises(ConfigError) as caught:
        primary_settings.ensure_admin_token(lab)
    message = caught.value.message
    assert "pe-console-password" in message and "PE_CONSOLE_PASSWORD" in message
    assert "'admin'" in message and PRIMARY in message
    assert "Wrong-Passw0rd!" not in message
    assert len(re.findall(r"[.!?](\s|$)", message)) <= 1, message
    # the API was asked the same password with a short-lived token, to tell "wrong" from "broken"
    assert [r.body for r in lab.http.requests] == [
        {"login": "admin", "password": "Wrong-Passw0rd!", "lifetime": "5m"}
    ]
    assert lab.primary.commands() == [login_argv("admin", paths.ADMIN_TOKEN)], "no chmod"


@pytest.mark.parametrize(
    "api_answer",
    [
        httpx.Response(200, json={"token": "short-lived-check-token"}),  # the password is right
        httpx.Response(503, json={"msg": "RBAC is starting"}),  # cannot tell
    ],
)
def test_login_failing_for_another_reason_raises_the_command_failure(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch, api_answer: httpx.Response
) -> None:
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", CONSOLE_PASSWORD)
    lab.primary.on(
        login_argv("admin", paths.ADMIN_TOKEN),
        Reply(1, "", "Error: Failed to connect to https://primary.vm:4433/rbac-api\n"),
    )
    lab.http.on("POST", f"{RBAC}/v1/auth/token", api_answer)
    with pytest.raises(CommandFailed) as caught:
        primary_settings.ensure_admin_token(lab)
    assert caught.value.transient, "a login that failed for another reason may work next time"
    assert CONSOLE_PASSWORD not in caught.value.message
    assert ["chmod", "600", paths.ADMIN_TOKEN] not in lab.primary.commands()


def test_admin_token_needed_without_a_password_set_fails_before_any_command(lab: FakeLab) -> None:
    with pytest.raises(ConfigError, match=r"pe-console-password.*PE_CONSOLE_PASSWORD"):
        primary_settings.ensure_admin_token(lab)
    assert lab.primary.commands() == []


# --- ensure_deploy_user ----------------------------------------------------------------------


def _admin_token(lab: FakeLab, server: str = PRIMARY) -> None:
    lab.host(server).write(paths.ADMIN_TOKEN, ADMIN_TOKEN + "\n", mode=0o600)


def _deploy_user(role_ids: list[int]) -> dict[str, object]:
    return {"id": DEPLOY_USER_ID, "login": "deploy", "role_ids": role_ids}


def _users(lab: FakeLab, *users: dict[str, object]) -> None:
    admin = {"id": "42bf351c-f9ec-40af-84ad-e976fec7f4bd-admin", "login": "admin", "role_ids": [1]}
    lab.http.on("GET", f"{RBAC}/v1/users", json=[admin, *users])


def test_deploy_user_holding_the_role_is_left_alone(lab: FakeLab) -> None:
    _admin_token(lab)
    lab.http.on("GET", f"{RBAC}/v1/roles", json=ROLES)
    _users(lab, _deploy_user([4]))
    assert code_manager.ensure_deploy_user(lab) == "present"
    assert [(r.method, r.url) for r in lab.http.requests] == [
        ("GET", f"{RBAC}/v1/roles"),
        ("GET", f"{RBAC}/v1/users"),
    ]
    assert all(r.header("X-Authentication") == ADMIN_TOKEN for r in lab.http.requests)
    assert lab.mutations() == []


def test_missing_deploy_user_is_created_with_the_code_deployers_role(lab: FakeLab) -> None:
    _admin_token(lab)
    lab.http.on("GET", f"{RBAC}/v1/roles", json=ROLES)
    _users(lab)
    lab.http.on(  # PE answers 201 Created with the new user's location (RBAC API v1 docs)
        "POST",
        f"{RBAC}/v1/users",
        httpx.Response(201, headers={"Location": f"/rbac-api/v1/users/{DEPLOY_USER_ID}"}),
    )
    assert code_manager.ensure_deploy_user(lab) == "created"
    [created] = lab.http.mutations()
    assert created.url == f"{RBAC}/v1/users"
    assert created.body["login"] == "deploy"
    assert created.body["role_ids"] == [4]  # the id RBAC gave Code Deployers
    assert "password" not in created.body, "the password is set later, through a reset token"


def test_deploy_user_without_the_role_is_granted_it(lab: FakeLab) -> None:
    _admin_token(lab)
    lab.http.on("GET", f"{RBAC}/v1/roles", json=ROLES)
    _users(lab, _deploy_user([1]))
    lab.http.on("POST", f"{RBAC}/v1/command/roles/add-users", status=204, text="")
    assert code_manager.ensure_deploy_user(lab) == "role added"
    assert lab.http.mutations() == [
        Http(
            "POST",
            f"{RBAC}/v1/command/roles/add-users",
            {"role_id": 4, "user_ids": [DEPLOY_USER_ID]},
        )
    ]


def test_deploy_user_is_not_created_when_pe_has_no_code_deployers_role(lab: FakeLab) -> None:
    _admin_token(lab)
    lab.http.on("GET", f"{RBAC}/v1/roles", json=ROLES[:1])
    with pytest.raises(PermanentError, match="Code Deployers"):
        code_manager.ensure_deploy_user(lab)
    assert lab.mutations() == []


# --- ensure_deploy_token ---------------------------------------------------------------------


def test_valid_deploy_token_is_kept(lab: FakeLab) -> None:
    lab.primary.write(paths.DEPLOY_TOKEN, DEPLOY_TOKEN + "\n", mode=0o600)
    authenticate(lab, 200)
    assert code_manager.ensure_deploy_token(lab) == "valid"
    assert lab.primary.calls == [Exists(paths.DEPLOY_TOKEN, root=True)]
    assert [r.body["token"] for r in lab.http.requests] == [DEPLOY_TOKEN]
    assert lab.mutations() == []


def _reset_flow(lab: FakeLab) -> None:
    _admin_token(lab)
    _users(lab, _deploy_user([4]))
    lab.http.on("POST", f"{RBAC}/v1/users/{DEPLOY_USER_ID}/password/reset", text="reset-tok-1234")
    lab.http.on("POST", f"{RBAC}/v1/auth/reset", status=200, text="")


def test_missing_deploy_token_gets_a_fresh_password_through_a_reset_token(lab: FakeLab) -> None:
    _reset_flow(lab)
    lab.primary.on(login_argv("deploy", paths.DEPLOY_TOKEN), saves_token(paths.DEPLOY_TOKEN, "d"))
    lab.primary.on(["chmod", "600", paths.DEPLOY_TOKEN], chmod)
    assert code_manager.ensure_deploy_token(lab) == "created"
    reset = lab.http.requests[-1]
    assert (reset.method, reset.url) == ("POST", f"{RBAC}/v1/auth/reset")
    assert reset.body["token"] == "reset-tok-1234"
    password = reset.body["password"]
    # PE's default password policy: upper and lower case, a digit and a special character
    assert all(re.search(p, password) for p in ("[A-Z]", "[a-z]", "[0-9]", "[^A-Za-z0-9]"))
    assert lab.primary.calls == [
        Exists(paths.DEPLOY_TOKEN, root=True),
        Run(login_argv("deploy", paths.DEPLOY_TOKEN), root=True, stdin=password + "\n"),
        Run(["chmod", "600", paths.DEPLOY_TOKEN], root=True),
    ]
    assert not any(password in line for line in lab.command_lines())
    assert lab.primary.files[paths.DEPLOY_TOKEN].mode == 0o600


def test_each_new_deploy_token_gets_its_own_password(lab: FakeLab) -> None:
    _reset_flow(lab)
    lab.primary.on(login_argv("deploy", paths.DEPLOY_TOKEN), Reply())
    lab.primary.on(["chmod", "600", paths.DEPLOY_TOKEN], Reply())
    code_manager.ensure_deploy_token(lab)
    code_manager.ensure_deploy_token(lab)
    resets = [r.body["password"] for r in lab.http.requests if r.url.endswith("/auth/reset")]
    assert len(resets) == 2 and resets[0] != resets[1]


def test_deploy_token_is_not_made_for_a_user_that_does_not_exist(lab: FakeLab) -> None:
    _admin_token(lab)
    _users(lab)
    with pytest.raises(PreconditionError, match=r"'deploy' does not exist on primary\.vm"):
        code_manager.ensure_deploy_token(lab)
    assert lab.mutations() == []


def test_refused_deploy_password_does_not_blame_the_console_password(lab: FakeLab) -> None:
    _reset_flow(lab)
    lab.primary.on(login_argv("deploy", paths.DEPLOY_TOKEN), LOGIN_REFUSED)
    lab.http.on("POST", f"{RBAC}/v1/auth/token", json={"msg": "invalid"}, status=401)
    with pytest.raises(ConfigError) as caught:
        code_manager.ensure_deploy_token(lab)
    assert "'deploy'" in caught.value.message
    assert "pe-console-password" not in caught.value.message
