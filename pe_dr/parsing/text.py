"""What every parser shares: lines without colours or carriage returns."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def lines(text: str) -> list[str]:
    """Lines without ANSI colours, CRs or trailing blanks."""
    return [_ANSI.sub("", line).rstrip() for line in text.replace("\r\n", "\n").split("\n")]
