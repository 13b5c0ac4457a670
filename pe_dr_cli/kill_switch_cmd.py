"""`pe-dr kill-switch [on|off|status]`: the canary drill's kill switch (flows.kill_switch)."""

from __future__ import annotations

import argparse
from typing import Any


class KillSwitchUsageError(ValueError):
    """A bad reason: said in one line, exit 2."""


def add_parser(sub: Any) -> None:
    switch = sub.add_parser(
        "kill-switch",
        help="stop every running canary drill (its block removed) and refuse new ones, or allow "
        "them again",
    )
    switch.add_argument("state", nargs="?", choices=("on", "off", "status"), default="status")
    switch.add_argument("--reason", default="", metavar="TEXT", help="why (shown to the drills)")


def run(args: argparse.Namespace) -> int:
    reason = " ".join(args.reason.split())
    if len(reason) > 200 or not reason.isprintable():
        raise KillSwitchUsageError("--reason: one line of at most 200 printable characters")
    from prefect.settings import get_current_settings

    from pe_dr_cli.deployment_commands import require_prefect_api

    if not get_current_settings().api.url:  # a temporary server of its own would switch nothing
        raise KillSwitchUsageError(
            "the kill switch lives on the Prefect server the drills use: set PREFECT_API_URL"
        )
    require_prefect_api()
    from flows import kill_switch

    if args.state == "on":
        print(f"   switch  ON: {kill_switch.turn_on(reason)}")
        print("           no canary drill starts while it is on")
    elif args.state == "off":
        was = kill_switch.turn_off()
        print(f"   switch  off{'' if was else ' (it was not on)'}: canary drills may start again")
    else:
        now = kill_switch.engaged()
        print(f"   switch  {'ON: ' + now if now else 'off'}")
    return 0
