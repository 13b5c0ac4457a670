"""The `pe-dr serve`, `pe-dr setup` and `pe-dr deployments` subcommands (deployment operations)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pe_dr.errors import ConfigError
from pe_dr.lab.spec import load_spec

COMMANDS = ("serve", "setup", "deployments")


def _at_least_one(text: str) -> int:
    """A concurrency limit: 0 would serve nothing, forever."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} must be between 1 and 1000")
    return value


API_CHECK_SECONDS = 3.0


def require_prefect_api() -> None:
    """A PREFECT_API_URL that does not answer as a Prefect server stops the command in its first
    seconds, naming the URL (unset: the commands use a local server of their own). Asked of
    Prefect's own health endpoint, with a short timeout."""
    url = (os.environ.get("PREFECT_API_URL") or "").strip()
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = str(PREFECT_API_URL.value() or "").strip()
    if not url:
        return
    import httpx

    health = url.rstrip("/") + "/health"
    try:
        answer = httpx.get(health, timeout=API_CHECK_SECONDS, follow_redirects=False)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ConfigError(f"PREFECT_API_URL {url} does not answer ({reason})") from None
    try:
        healthy = answer.status_code == 200 and answer.json() is True
    except ValueError:
        healthy = False
    if not healthy:
        raise ConfigError(
            f"PREFECT_API_URL {url} is not a Prefect server's API ({health} answered "
            f"{answer.status_code}); it ends in /api, e.g. http://127.0.0.1:4200/api"
        )


def add_spec_option(parser: argparse.ArgumentParser, flag: str = "--spec") -> None:
    parser.add_argument(flag, metavar="FILE", help="lab spec TOML (default: $PE_DR_LAB_SPEC)")


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    serve = sub.add_parser(
        "serve", help="serve every deployment from this process (a workstation; Ctrl-C stops)"
    )
    add_spec_option(serve)
    serve.add_argument(
        "--limit",
        type=_at_least_one,
        metavar="N",
        help="at most N flow runs at once (1 or more)",
    )

    setup = sub.add_parser(
        "setup",
        help="create the lab's concurrency limit (one drill per lab) and, with --notify, the "
        "failure notification",
    )
    add_spec_option(setup, "--lab-spec")
    setup.add_argument(
        "--notify",
        metavar="BLOCK",
        help="notification block (NAME or TYPE/NAME) to notify when a drill fails or crashes, "
        "when a run waits for approval, and when no drill has passed for $PE_DR_OVERDUE_DAYS "
        "(35)",
    )

    deployments = sub.add_parser("deployments", help="the deployment catalog")
    what = deployments.add_subparsers(dest="deployments_command", required=True)
    what.add_parser("list", help="name, schedule and tags of every deployment")
    yaml_cmd = what.add_parser("yaml", help="print prefect.yaml (for `prefect deploy --all`)")
    yaml_cmd.add_argument("--work-pool", metavar="NAME", help="process work pool (pe-dr-lab)")
    yaml_cmd.add_argument(
        "--lab-spec", metavar="FILE", help="lab spec for the flow runs (job_variables.env)"
    )


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return serve(args)
    if args.command == "setup":
        return setup(args)
    return deployments(args)


def _require_server(command: str) -> None:
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ConfigError(
                f"pe-dr {command} needs a Prefect server: start one (`prefect server start`) "
                "and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
            )
    require_prefect_api()


def serve(args: argparse.Namespace) -> int:
    from deployments.catalog import schedule
    from deployments.serving import serve_all

    spec = load_spec(args.spec) if args.spec else None
    schedule()  # a bad cron is the admin's input: named before the server is asked
    _require_server("serve")
    serve_all(spec, limit=args.limit)
    return 0


def setup(args: argparse.Namespace) -> int:
    from deployments.admin import setup as do_setup

    _require_server("setup")
    spec = load_spec(args.lab_spec)
    outcome = do_setup(spec, args.notify)
    print(
        f"concurrency limit {outcome.limit}: "
        f"{'created (1 slot)' if outcome.limit_created else 'already there'}"
    )
    if outcome.automation:
        state = "created" if outcome.automation_created else "updated"
        print(f"automation {outcome.automation!r}: {state}, notifies {args.notify!r}")
    for name, created in outcome.more.items():
        print(
            f"automation {name!r}: {'created' if created else 'updated'}, notifies {args.notify!r}"
        )
    return 0


def deployments(args: argparse.Namespace) -> int:
    from deployments.catalog import catalog, prefect_yaml

    if args.deployments_command == "yaml":
        sys.stdout.write(prefect_yaml(args.work_pool, args.lab_spec))
        return 0
    found = catalog()
    width = max(len(d.full_name) for d in found)
    for d in found:
        schedule = f"{d.cron} ({d.timezone})" if d.cron else "by hand"
        print(f"{d.full_name:<{width}}  {schedule:<18} {', '.join(d.tags)}")
    return 0
