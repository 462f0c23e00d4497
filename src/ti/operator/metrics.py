"""The operator's Prometheus metrics, served on TI_OPERATOR_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_CREATED = Counter("ti_jobs_created_total", "TFTrainingJobs whose pods were first created")
JOBS_SUCCEEDED = Counter("ti_jobs_succeeded_total", "TFTrainingJobs that reached Completed")
JOBS_FAILED = Counter("ti_jobs_failed_total", "TFTrainingJobs that reached Failed", ["reason"])
JOBS_RESTARTED = Counter("ti_jobs_restarted_total", "Retries of all instances of a TFTrainingJob")
RECONCILE_SECONDS = Histogram("ti_reconcile_duration_seconds", "Time of one reconcile of one job")
COALESCED = Counter(
    "ti_reconciles_coalesced_total", "Reconcile requests merged into one already queued for the same job"
)
