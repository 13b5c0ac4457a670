"""pe_dr: the core of pe-dr-drill, free of Prefect: lab model, clients, parsers, report."""

__version__ = "0.1.0"
