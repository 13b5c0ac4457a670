"""`pe-dr serve`: one long-running process that serves every deployment of the catalog.

For a workstation: no work pool, no worker. Schedules stay on when it stops
(`pause_on_shutdown=False`, Prefect issue #16363); SIGINT and SIGTERM stop it cleanly: runs in
progress are cancelled (a Retry resumes them), and the process exits 0.
"""

from __future__ import annotations

from deployments.catalog import catalog
from pe_dr.lab.spec import LabSpec


def serve_all(spec: LabSpec | None = None, limit: int | None = None) -> None:
    """Serve the catalog until SIGINT or SIGTERM (Prefect's runner handles both)."""
    defs = catalog(spec)  # validates the schedule before Prefect's seconds-long import
    from prefect import serve

    deployments = [d.to_deployment() for d in defs]
    serve(*deployments, pause_on_shutdown=False, limit=limit)
