"""The Prefect side of a run that died: its flow run is recorded in the ledger."""

from __future__ import annotations

from prefect.runtime import flow_run

__all__ = ["current_flow_run_id"]


def current_flow_run_id() -> str | None:
    """The flow run this code runs in (recorded in the ledger), or None outside one."""
    return flow_run.get_id() or None
