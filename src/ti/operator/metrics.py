"""The operator's Prometheus metrics, served on TI_OPERATOR_METRICS_PORT.

Job counters are counted from the structured fields of a plan's events (`count`), never from their
message text, so rewording a message cannot break a dashboard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from ti.reasons import EventReason

if TYPE_CHECKING:
    from ti.operator.plans import Event

JOBS_CREATED = Counter("ti_jobs_created_total", "TFTrainingJobs whose pods were first created")
JOBS_SUCCEEDED = Counter("ti_jobs_succeeded_total", "TFTrainingJobs that reached Completed")
JOBS_FAILED = Counter("ti_jobs_failed_total", "TFTrainingJobs that reached Failed", ["reason"])
JOBS_RESTARTED = Counter("ti_jobs_restarted_total", "Retries of all instances of a TFTrainingJob")
RECONCILE_SECONDS = Histogram("ti_reconcile_duration_seconds", "Time of one reconcile of one job")
RECONCILE_ERRORS = Counter(
    "ti_reconcile_errors_total", "Reconciles that raised, by the error's class (each is retried)", ["error"]
)
COALESCED = Counter(
    "ti_reconciles_coalesced_total", "Reconcile requests merged into one already queued for the same job"
)


def count(event: Event) -> None:
    """Count what a recorded event says about its job."""
    if event.reason == EventReason.CREATED and event.attempt == 0:
        JOBS_CREATED.inc()
    elif event.reason == EventReason.COMPLETED:
        JOBS_SUCCEEDED.inc()
    elif event.reason == EventReason.FAILED:
        JOBS_FAILED.labels(reason=event.status_reason or "").inc()  # every Failed event carries one
    elif event.reason == EventReason.RESTARTING:
        JOBS_RESTARTED.inc()
