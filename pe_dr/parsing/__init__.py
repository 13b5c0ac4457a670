"""Parsers for what the lab prints, by subject: vagrant, a Puppet agent run, PE. Pure functions
over text (no I/O), the ground floor of the core: every other layer may use them, they use none.
Formats and samples: ../shared/reference/pe-dr-interfaces.md and tests/golden/."""
