"""No silent failure: the backoff of a reconcile that raised, what its Event may say, and metrics that
count structured fields of a plan's events (never their text)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from ti.operator import metrics
from ti.operator.events import error_message
from ti.operator.plans import Event
from ti.operator.workqueue import ERROR_BACKOFF_BASE_SECONDS, ERROR_BACKOFF_MAX_SECONDS, ItemBackoff
from ti.reasons import EventReason, Reason

pytestmark = pytest.mark.unit

A, B = ("team-a", "mnist"), ("team-a", "other")


def test_backoff_doubles_from_one_second_to_five_minutes_per_job_and_resets_on_success() -> None:
    assert (ERROR_BACKOFF_BASE_SECONDS, ERROR_BACKOFF_MAX_SECONDS) == (1.0, 300.0)
    backoff = ItemBackoff()
    schedule = [backoff.failed(A) for _ in range(12)]
    assert schedule == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert backoff.failed(B) == 1  # each job has its own count
    assert backoff.failures(A) == 12
    backoff.succeeded(A)
    assert backoff.failures(A) == 0 and backoff.failed(A) == 1
    assert backoff.failures(B) == 1


def test_backoff_stays_at_its_cap_however_long_a_job_fails() -> None:
    backoff = ItemBackoff(base=0.5, cap=10)
    delays = [backoff.failed(A) for _ in range(2000)]
    assert delays[:5] == [0.5, 1, 2, 4, 8] and set(delays[5:]) == {10}


def _api_error(status: int, reason: str, message: str) -> ApiException:
    err = ApiException(status=status, reason=reason)
    err.body = json.dumps({"kind": "Status", "message": message, "details": {"token": "s3cr3t"}})
    err.headers = {"Authorization": "Bearer s3cr3t", "Audit-Id": "1"}
    return err


def test_an_api_error_says_class_status_reason_and_the_servers_message_only() -> None:
    denied = "ValidatingAdmissionPolicy 'deny' with binding 'deny' denied request: status is frozen"
    said = error_message(_api_error(403, "Forbidden", denied))
    assert said == f"ApiException: 403 Forbidden: {denied}"
    assert "s3cr3t" in str(_api_error(403, "Forbidden", denied))  # what str() would have leaked
    assert "s3cr3t" not in said and "Authorization" not in said and "HTTP response" not in said


def test_an_api_error_without_a_status_body_keeps_to_status_and_reason() -> None:
    err = ApiException(status=502, reason="Bad Gateway")
    err.body = "<html>proxy error, cookie=s3cr3t</html>"
    assert error_message(err) == "ApiException: 502 Bad Gateway"


def test_other_errors_name_their_class_and_are_clipped() -> None:
    assert error_message(KeyError("spec")) == "KeyError: 'spec'"
    assert error_message(RuntimeError()) == "RuntimeError"
    long = error_message(ValueError("x" * 5000))
    assert long.startswith("ValueError: xxx") and len(long) == 1024


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_count_the_events_fields_whatever_their_message_says() -> None:
    before = {
        "created": _value("ti_jobs_created_total"),
        "succeeded": _value("ti_jobs_succeeded_total"),
        "failed": _value("ti_jobs_failed_total", reason=Reason.UPLOAD_FAILED),
        "restarted": _value("ti_jobs_restarted_total"),
    }
    for e in (
        Event("Normal", EventReason.CREATED, "reworded: two pods", attempt=0),
        Event("Normal", EventReason.CREATED, "created 2 pods (attempt 0)", attempt=1),  # a retry's pods
        Event("Normal", EventReason.COMPLETED, "done"),
        Event(
            "Warning", EventReason.FAILED, "TrainingFailed: the message lies", status_reason="UploadFailed"
        ),
        Event("Warning", EventReason.RESTARTING, "whatever", attempt=1),
        Event("Warning", EventReason.INSTANCE_FAILED, "Restarting Created Failed", attempt=0),
    ):
        metrics.count(e)
    assert _value("ti_jobs_created_total") == before["created"] + 1
    assert _value("ti_jobs_succeeded_total") == before["succeeded"] + 1
    assert _value("ti_jobs_failed_total", reason=Reason.UPLOAD_FAILED) == before["failed"] + 1
    assert _value("ti_jobs_restarted_total") == before["restarted"] + 1
