"""The modelled PE and GitLab state (what the services' databases hold)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

ALL_NODES = "00000000-0000-4000-8000-000000000000"
ADMIN_ID = "42bf351c-f9ec-40af-84ad-e976fec7f4bd"

ROLES: list[dict[str, Any]] = [
    {"id": 1, "display_name": "Administrators", "description": "Manage everything."},
    {"id": 2, "display_name": "Operators", "description": "Manage most things."},
    {"id": 3, "display_name": "Viewers", "description": "View most things."},
    {"id": 4, "display_name": "Code Deployers", "description": "Deploy code."},
    {"id": 5, "display_name": "Project Deployers", "description": "Deploy projects."},
]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_token() -> str:
    return "0" + secrets.token_urlsafe(32)


def agent_profile(servers: list[str]) -> dict[str, Any]:
    return {
        "manage_puppet_conf": True,
        "pcp_broker_list": [f"{s}:8142" for s in servers],
        "primary_uris": [f"{s}:8140" for s in servers],
        "server_list": [f"{s}:8140" for s in servers],
    }


def _group(
    name: str, parent: str, classes: dict[str, Any], gid: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "id": gid or str(uuid.uuid4()),
        "description": "",
        "environment": "production",
        "environment_trumps": False,
        "parent": parent,
        "rule": None,
        "classes": classes,
        "config_data": {},
        "variables": {},
        "deleted": {},
        "last_edited": now_iso(),
        "serial_number": 1,
    }


@dataclass
class PEState:
    primary: str
    admin_password: str
    replica: str | None = None
    replica_enabled: bool = False
    promoted: bool = False
    cm_active: bool = False
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    reset_tokens: dict[str, str] = field(default_factory=dict)
    role_members: dict[int, list[str]] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    deploy_seq: int = 0
    deploys: dict[int, dict[str, Any]] = field(default_factory=dict)
    storage: dict[str, dict[str, str]] = field(default_factory=dict)  # env -> {sig,date}
    clients: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    job_seq: int = 0
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    # roles made through POST /rbac-api/v1/roles, by id (the built-in ones are ROLES)
    custom_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    primary_keys: dict[str, str] = field(default_factory=dict)
    # agents whose certificate request waits for `puppetserver ca sign` (no autosign on the CA)
    pending_certs: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)

    @classmethod
    def install(cls, primary: str, admin_password: str) -> PEState:
        pe = cls(primary=primary, admin_password=admin_password)
        pe.users[ADMIN_ID] = {
            "id": ADMIN_ID,
            "login": "admin",
            "email": "",
            "display_name": "Administrator",
            "role_ids": [1],
            "is_superuser": True,
            "is_revoked": False,
            "is_remote": False,
            "is_group": False,
            "last_login": None,
            "password": admin_password,
        }
        pe.role_members = {r["id"]: [] for r in ROLES}
        pe.role_members[1].append(ADMIN_ID)
        pe.nodes = [primary]
        infra = _group("PE Infrastructure", ALL_NODES, {"puppet_enterprise": {}})
        pe.groups = [
            _group("All Nodes", ALL_NODES, {}, ALL_NODES),
            infra,
            _group(
                "PE Master",
                infra["id"],
                {
                    "puppet_enterprise::profile::master": {
                        "replication_mode": "none",
                        "code_manager_auto_configure": False,
                    }
                },
            ),
            _group(
                "PE Infrastructure Agent",
                infra["id"],
                {"puppet_enterprise::profile::agent": agent_profile([primary])},
            ),
            _group(
                "PE Agent",
                ALL_NODES,
                {"puppet_enterprise::profile::agent": agent_profile([primary])},
            ),
            _group("PE Console", infra["id"], {"puppet_enterprise::profile::console": {}}),
            _group(
                "PE Orchestrator", infra["id"], {"puppet_enterprise::profile::orchestrator": {}}
            ),
            _group("PE PuppetDB", infra["id"], {"puppet_enterprise::profile::puppetdb": {}}),
        ]
        return pe

    # -- lookups ------------------------------------------------------------------------------
    def group(self, name: str) -> dict[str, Any]:
        return next(g for g in self.groups if g["name"] == name)

    def master_params(self) -> dict[str, Any]:
        return dict(
            self.group("PE Master")["classes"].get("puppet_enterprise::profile::master", {})
        )

    def agent_params(self, infra: bool) -> dict[str, Any]:
        name = "PE Infrastructure Agent" if infra else "PE Agent"
        return dict(self.group(name)["classes"].get("puppet_enterprise::profile::agent", {}))

    def user_by_login(self, login: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if u["login"] == login), None)

    def token_user(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return None
        info = self.tokens.get(token.strip())
        if info is None:
            return None
        user = self.users.get(info["user_id"])
        if user is None or user["is_revoked"]:
            return None
        return user

    def user_roles(self, user: dict[str, Any]) -> set[int]:
        return {rid for rid, members in self.role_members.items() if user["id"] in members}

    def is_admin(self, user: dict[str, Any] | None) -> bool:
        return user is not None and (user["is_superuser"] or 1 in self.user_roles(user))

    def can_deploy(self, user: dict[str, Any] | None) -> bool:
        return user is not None and (self.is_admin(user) or bool({4} & self.user_roles(user)))

    def issue_token(self, user: dict[str, Any], label: str = "") -> str:
        token = new_token()
        self.tokens[token] = {"user_id": user["id"], "label": label, "created": now_iso()}
        self.issued.append(token)
        user["last_login"] = now_iso()
        return token

    def set_agent_servers(self, servers: list[str]) -> None:
        for name in ("PE Agent", "PE Infrastructure Agent"):
            cls = self.group(name)["classes"].setdefault("puppet_enterprise::profile::agent", {})
            cls.update(agent_profile(servers))


@dataclass
class GitLabState:
    root_password: str
    pats: dict[str, int] = field(default_factory=dict)
    keys: list[dict[str, Any]] = field(default_factory=list)
    projects: dict[int, dict[str, Any]] = field(default_factory=dict)
    hooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    hook_tokens: dict[int, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(
        default_factory=lambda: {
            "allow_local_requests_from_web_hooks_and_services": False,
            "allow_local_requests_from_system_hooks": True,
            "dns_rebinding_protection_enabled": True,
            "signup_enabled": True,
        }
    )
    trusted_cas: list[str] = field(default_factory=list)
    seq: int = 0

    def next_id(self) -> int:
        self.seq += 1
        return self.seq

    def root_user(self) -> dict[str, Any]:
        return {
            "id": 1,
            "username": "root",
            "name": "Administrator",
            "state": "active",
            "is_admin": True,
            "email": "admin@example.com",
        }

    def project(self, ident: str) -> dict[str, Any] | None:
        if ident.isdigit():
            return self.projects.get(int(ident))
        return next((p for p in self.projects.values() if p["path_with_namespace"] == ident), None)
