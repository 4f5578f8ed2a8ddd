"""The Prefect side of a run that died: its flow run is recorded in the ledger, and marked Crashed
by the tenant's next run when that run reaps the dead run's rows."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.runtime import flow_run
from prefect.states import Crashed

__all__ = ["current_flow_run_id", "mark_crashed"]


def current_flow_run_id() -> str | None:
    """The flow run this code runs in (recorded in the ledger), or None outside one."""
    return flow_run.get_id() or None


def mark_crashed(flow_run_ids: list[str], tenant_id: str, reaper: str) -> None:
    """Mark the flow runs of reaped rows Crashed, if Prefect still has them RUNNING or PENDING.

    Best effort: a run this API does not know (it ran against another one), a refusal or an
    unreachable API is logged as a warning, never raised, so that the new run goes on.
    """
    if not flow_run_ids:
        return
    logger = get_run_logger()
    current = current_flow_run_id()
    message = f"process died; reaped by the next {reaper} of tenant {tenant_id}"
    try:
        with get_client(sync_client=True) as client:
            for run_id in flow_run_ids:
                if run_id == current:
                    continue
                try:
                    run = client.read_flow_run(UUID(run_id))
                    if run.state is None or run.state.type not in (StateType.RUNNING, StateType.PENDING):
                        continue
                    result: OrchestrationResult[Any] = client.set_flow_run_state(run.id, Crashed(message=message))
                except Exception as exc:  # noqa: BLE001 - best effort, per run
                    logger.warning("could not mark flow run %s of tenant %s crashed: %s", run_id, tenant_id, exc)
                    continue
                if result.status == SetStateStatus.ACCEPT:
                    logger.warning("flow run %s (%s) of tenant %s died: marked Crashed", run.name, run_id, tenant_id)
                else:
                    logger.warning("Prefect kept flow run %s as it is: %s", run_id, result.details)
    except Exception as exc:  # noqa: BLE001 - the API cannot be reached: the ledger is right anyway
        logger.warning("could not mark the dead flow runs of tenant %s crashed: %s", tenant_id, exc)
