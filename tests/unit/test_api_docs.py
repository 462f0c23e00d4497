from __future__ import annotations

from pathlib import Path

import pytest

from ti.api import Phase, TFTrainingJob
from ti.api.docs import DOCS_FILE, EXAMPLE, PHASES, render_markdown
from ti.reasons import EventReason, Reason

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_committed_api_docs_are_fresh() -> None:
    committed = (ROOT / DOCS_FILE).read_text(encoding="utf-8")
    assert committed == render_markdown(), (
        f"{DOCS_FILE} is stale: run make docs (python -m ti.api.docs > {DOCS_FILE})"
    )


def test_example_is_a_valid_job() -> None:
    assert TFTrainingJob.from_body(EXAMPLE).spec.instance_count == 2


def test_every_field_phase_and_reason_is_documented() -> None:
    text = render_markdown()
    for field in (
        "instanceType",
        "inputs",
        "runPolicy",
        "stop",
        "suspend",
        "ttlSecondsAfterFinished",
        "volumeSizeGB",
        "failureReason",
        "modelArtifacts",
        "billableSeconds",
        "lastTransitionTime",
        "exitCode",
    ):
        assert f"`{field}`" in text
    assert set(PHASES) == set(Phase)
    for reason in [*Reason, *EventReason]:
        assert reason.doc, f"{reason!r} has no line saying when it is set"
        assert f"| `{reason}` | {reason.doc} |" in text
