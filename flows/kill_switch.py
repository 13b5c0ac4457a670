"""The canary drill's kill switch: one Prefect variable, read by every canary drill.

While it is on, a canary drill refuses at pre-flight (and a running one is to remove its block at
once and end `aborted`: the canary flow polls it while its block is on). It is turned on by
`pe-dr kill-switch on` or, in the Prefect UI, by creating the variable `pe-dr-kill-switch`
(Variables page) with any value but `off` or `false`; off by `pe-dr kill-switch off` or by
deleting it. A variable, not a deployment or a flag file: every
worker and every `pe-dr` that talks to this Prefect server sees the same one.
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from prefect.variables import Variable

from pe_dr.report import utc_now

VARIABLE = "pe-dr-kill-switch"
_OFF = (None, False, 0, "", "off", "false", "OFF", "False")


def engaged() -> str | None:
    """Why every canary drill must stop now (one sentence), or None when the switch is off."""
    value: Any = Variable.get(VARIABLE, default=None)
    if value in _OFF:
        return None
    if isinstance(value, dict) and value.get("by"):
        reason = f": {value['reason']}" if value.get("reason") else ""
        return f"the kill switch was turned on at {value.get('at')} by {value['by']}{reason}"
    return f"the kill switch is on (the Prefect variable {VARIABLE} is {value!r})"


def turn_on(reason: str = "") -> str:
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    value = {"engaged": True, "at": utc_now(), "by": who, "reason": reason}
    Variable.set(VARIABLE, value, tags=["pe-dr"], overwrite=True)
    return engaged() or ""


def turn_off() -> bool:
    """True when it was on."""
    was_on = engaged() is not None
    Variable.unset(VARIABLE)
    return was_on
