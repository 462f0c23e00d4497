"""The TFTrainingJob's status: what is happening to the job, and why. Written by the operator only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field

from ti.api.common import ConditionStatus, ConditionType, InstancePhase, Phase, StatusModel


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: ConditionType = Field(
        description="Created, Running, Restarting, Succeeded, Failed, Suspended or Admitted."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="CamelCase reason of the last transition.")
    message: str | None = Field(default=None, description="What happened, for humans.")
    last_transition_time: AwareDatetime | None = Field(
        default=None, description="When status last changed (not reason or message)."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed from."
    )


class InstanceStatus(StatusModel):
    """One instance (pod) of the job."""

    name: str = Field(description="Instance name and host name, e.g. <job>-worker-0.")
    role: Literal["worker", "ps"] = Field(description="worker or ps (parameter server).")
    index: int = Field(description="Index within its role; worker 0 is the chief.")
    pod: str | None = Field(default=None, description="Name of the pod running the instance.")
    node: str | None = Field(default=None, description="Node the pod was scheduled to.")
    phase: InstancePhase = Field(
        default=InstancePhase.PENDING,
        description="Pending, Starting, Downloading, Training, Uploading, Succeeded, Failed or Deleted.",
    )
    exit_code: int | None = Field(default=None, description="Exit code of the training container.")
    restarts: int = Field(default=0, description="How many times this instance was recreated.")


class TFTrainingJobStatus(StatusModel):
    """What is happening to the job, and why; written by the operator only."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "Pending, Starting, Downloading, Training, Uploading, Completed, Failed, Stopping, "
            "Stopped, Suspended or Queued (waiting for Kueue to admit it)."
        ),
    )
    reason: str | None = Field(
        default=None,
        description=(
            "CamelCase reason of the phase, e.g. InvalidSpec, TrainingFailed, UploadFailed, "
            "BackoffLimitExceeded, Unschedulable, MaxRunExceeded, Stopped, WaitingForQuota."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Kubernetes conditions: Created, Running, Restarting, Succeeded, Failed, Suspended, and "
            "Admitted for a job in a Kueue queue."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    start_time: AwareDatetime | None = Field(
        default=None, description="When the first instance started (max run counts from here)."
    )
    completion_time: AwareDatetime | None = Field(default=None, description="When the job finished.")
    billable_seconds: int | None = Field(
        default=None,
        description="Wall-clock seconds from startTime to completionTime; set when the job finishes.",
    )
    instances: list[InstanceStatus] = Field(default_factory=list, description="One entry per instance.")
    restart_count: int = Field(
        default=0, description="How many times all instances were restarted after a platform fault."
    )
    failure_reason: str | None = Field(
        default=None,
        description=(
            "Why the job failed, for humans: the script's /opt/ml/output/failure, its log tail, or "
            "the platform's reason."
        ),
    )
    model_artifacts: str | None = Field(default=None, description="URI of model.tar.gz once Completed.")
    output_data: str | None = Field(default=None, description="URI of output.tar.gz once Completed.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Final values of spec.metricDefinitions."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status was computed from."
    )

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def copy_to_change(self) -> TFTrainingJobStatus:
        """A copy whose changes never reach this one: what can change in place (its lists, their
        items, the metrics) is copied and the rest, immutable, shared. `model_copy(deep=True)` does
        the same at four times the cost (64 against 16 µs for a running 2-instance job's status), and
        a plan makes two copies."""
        return self.model_copy(
            update={
                "conditions": [c.model_copy() for c in self.conditions],
                "instances": [i.model_copy() for i in self.instances],
                "metrics": dict(self.metrics),
            }
        )


def status_body(status: TFTrainingJobStatus) -> dict[str, Any]:
    """A status as the JSON the API server stores: camelCase, no nulls."""
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)
