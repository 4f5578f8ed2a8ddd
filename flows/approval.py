"""Approvals in the Prefect UI: a paused restore waits for a form (approve, approver, reason), and
``answer_approval`` answers it from code as the UI does."""

from __future__ import annotations

import time
from typing import Literal
from uuid import UUID

from prefect import pause_flow_run
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from pydantic import Field

from tasks.report import plan_markdown
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.results import Approval

__all__ = ["RestoreApproval", "answer_approval", "ask_approval"]


class RestoreApproval(RunInput):
    """The approver's answer: a decision to make (there is no default: a bare Resume is not an
    answer), who decides, and why."""

    decision: Literal["approve", "reject"] = Field(
        description="Approve: the restore runs now. Reject: nothing changes."
    )
    approver: str = Field(min_length=1, description="Your name, for the audit log (backup_restore_logs).")
    reason: str = Field("", description="Why (kept in the log with the decision).")


def answer_approval(
    flow_run_id: UUID | str, *, approve: bool, approver: str, reason: str = "", timeout: float = 60
) -> None:
    """Answer a restore that waits for approval, as the Prefect UI's form does.

    A paused run is ready for an answer only once its form (the run input schema) is saved, which
    Prefect does just *after* the run turns PAUSED: resuming in between is refused with "Run input
    schema not found". This waits (up to ``timeout`` seconds) until the run is paused and its form
    exists, then resumes it with the answer.
    """
    run_id = UUID(str(flow_run_id))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_paused():
                try:
                    client.read_flow_run_input(run_id, keyset_from_paused_state(state)["schema"])
                    break
                except ObjectNotFound:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {run_id} did not wait for approval within {timeout:.0f} s")
            time.sleep(0.5)
    answer = {"decision": "approve" if approve else "reject", "approver": approver, "reason": reason}
    resume_flow_run(run_id, run_input=answer)


def ask_approval(plan: RestorePlan, timeout: int, poll_interval: int) -> Approval:
    """Pause the flow run with the plan above the form and return the answer (no answer within
    ``timeout`` seconds is an answer too: not approved)."""
    started = time.monotonic()
    try:
        answer = pause_flow_run(
            wait_for_input=RestoreApproval.with_initial_data(
                description=plan_markdown(plan, title="Approve this restore?")
            ),
            timeout=timeout,
            poll_interval=poll_interval,
        )
    except FlowPauseTimeout:
        return Approval(approved=False, waited_seconds=time.monotonic() - started, timed_out=True)
    assert isinstance(answer, RestoreApproval)
    return Approval(
        approved=answer.decision == "approve",
        approver=answer.approver,
        reason=answer.reason,
        waited_seconds=time.monotonic() - started,
    )
