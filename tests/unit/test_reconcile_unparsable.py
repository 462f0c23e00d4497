"""reconcile.unparsable: a job the API server stored but the model refuses fails at once as InvalidSpec."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ti.api import ConditionStatus, ConditionType, Phase, TFTrainingJob
from ti.operator.refusals import describe, unparsable

from .jobs import at, body

pytestmark = pytest.mark.unit


def refusal(b: dict) -> str:  # type: ignore[type-arg]
    with pytest.raises(ValidationError) as caught:
        TFTrainingJob.from_body(b)
    return describe(caught.value)


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        (
            {"metricDefinitions": [{"name": "loss", "regex": "loss=("}]},
            "spec.metricDefinitions[0].regex",
            "not a valid regular expression",
        ),
        (
            {"metricDefinitions": [{"name": "acc", "regex": "acc"}]},
            "spec.metricDefinitions[0].regex",
            "needs a group",
        ),
        (
            {"inputs": {"train": "cos://d-1250000000/a", "TRAIN": "cos://d-1250000000/b"}},
            "spec.inputs",
            "differ in more than case",
        ),
    ],
)
def test_what_the_schema_cannot_check_fails_the_job_naming_the_field(spec, path: str, words: str) -> None:  # type: ignore[no-untyped-def]
    b = body(**spec)
    message = refusal(b)
    assert message.startswith(f"{path}: ") and words in message, message

    p = unparsable(b, message, at(5))
    assert p.status is not None and p.status_patch is not None
    assert (p.status.phase, p.status.reason, p.status.failure_reason) == (
        Phase.FAILED,
        "InvalidSpec",
        message,
    )
    failed = p.status.condition(ConditionType.FAILED)
    assert failed is not None and failed.status == ConditionStatus.TRUE
    assert p.status.observed_generation == 1 and p.status.completion_time == at(5)
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "Failed")]
    assert path in p.events[0].message
    assert not p.create_pods and not p.delete_pods and p.requeue_after is None


def test_a_failed_or_deleted_unparsable_job_is_left_alone() -> None:
    b = body(metricDefinitions=[{"name": "loss", "regex": "("}])
    first = unparsable(b, refusal(b), at(0))
    assert first.status_patch is not None
    b["status"] = first.status_patch
    assert unparsable(b, refusal(b), at(60)).idle
    assert unparsable(b, refusal(b), at(60)).events == []
    gone = body(metricDefinitions=[{"name": "loss", "regex": "("}])
    gone["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    assert unparsable(gone, "x", at(0)).idle


def test_a_garbled_status_is_replaced_whole() -> None:
    b = body(metricDefinitions=[{"name": "loss", "regex": "("}])
    b["status"] = {"phase": "NoSuchPhase"}
    p = unparsable(b, refusal(b), at(0))
    assert p.status_patch is not None and p.status_patch["phase"] == "Failed"
