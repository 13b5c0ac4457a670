"""Commands executed over SSH on a lab VM, one module per tool (the contract's command table,
docs/lab-contract.md): `shell` parses a command line and dispatches it through its registry."""

from labsim.commands.base import Ctx, Result
from labsim.commands.client_tools import write_client_tools
from labsim.commands.puppet_agent import agent_run
from labsim.commands.puppet_infra_status import status_entries
from labsim.commands.shell import run

__all__ = ["Ctx", "Result", "agent_run", "run", "status_entries", "write_client_tools"]
