"""pe_dr: the core of pe-dr-drill, free of Prefect: lab model, clients, parsers, report."""

import logging

__version__ = "0.1.0"

# python-vagrant warns at import, on stderr, when vagrant is not on PATH: a second, unasked line
# next to our own one-sentence error (pe_dr.lab.vagrant looks for vagrant at every call).
logging.getLogger("vagrant").addHandler(logging.NullHandler())
