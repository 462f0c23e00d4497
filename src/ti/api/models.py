"""The TFTrainingJob API: spec and status as pydantic models, the one source of truth.

The CRD (`ti.api.crd`), the API reference (`ti.api.docs`) and every default come from these classes:
the object here, its spec in `ti.api.spec`, its status in `ti.api.status`, and what they share
(names, field limits, enums) in `ti.api.common`. Every name of those is importable from here too, and
the public ones from `ti.api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ti import contract
from ti.api.common import (
    API_VERSION,
    CLUSTER_URI_PATTERN,
    DNS_SUBDOMAIN_MAX_LENGTH,
    DNS_SUBDOMAIN_PATTERN,
    HYPERPARAMETER_NAME_PATTERN,
    HYPERPARAMETER_VALUE_MAX_LENGTH,
    JOB_NAME_MAX_LENGTH,
    JOB_NAME_PATTERN,
    KIND,
    MAX_HYPERPARAMETERS,
    MAX_INSTANCES,
    MAX_PARAMETER_SERVERS,
    MAX_RUN_SECONDS,
    MAX_VOLUME_GB,
    MUTABLE_RUN_POLICY_FIELDS,
    PLURAL,
    URI_PATTERN,
    CleanPodPolicy,
    ConditionStatus,
    ConditionType,
    DistributionType,
    HyperparameterValue,
    InstancePhase,
    ObjectUri,
    Phase,
    SpecModel,
    StatusModel,
)
from ti.api.spec import (
    Distribution,
    EnvVar,
    MetricDefinition,
    RunPolicy,
    SecretRef,
    TFTrainingJobSpec,
)
from ti.api.status import Condition, InstanceStatus, TFTrainingJobStatus, status_body

__all__ = [
    "API_VERSION",
    "CLUSTER_URI_PATTERN",
    "DNS_SUBDOMAIN_MAX_LENGTH",
    "DNS_SUBDOMAIN_PATTERN",
    "HYPERPARAMETER_NAME_PATTERN",
    "HYPERPARAMETER_VALUE_MAX_LENGTH",
    "JOB_NAME_MAX_LENGTH",
    "JOB_NAME_PATTERN",
    "KIND",
    "MAX_HYPERPARAMETERS",
    "MAX_INSTANCES",
    "MAX_PARAMETER_SERVERS",
    "MAX_RUN_SECONDS",
    "MAX_VOLUME_GB",
    "MUTABLE_RUN_POLICY_FIELDS",
    "PLURAL",
    "URI_PATTERN",
    "CleanPodPolicy",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Distribution",
    "DistributionType",
    "EnvVar",
    "HyperparameterValue",
    "InstancePhase",
    "InstanceRef",
    "InstanceStatus",
    "MetricDefinition",
    "ObjectMeta",
    "ObjectUri",
    "Phase",
    "RunPolicy",
    "SecretRef",
    "SpecModel",
    "StatusModel",
    "TFTrainingJob",
    "TFTrainingJobSpec",
    "TFTrainingJobStatus",
    "status_body",
]


@dataclass(frozen=True)
class InstanceRef:
    """One instance a job asks for: its role (worker or ps), index within the role, and name."""

    role: str
    index: int
    name: str


# ---- the object ---------------------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of Kubernetes metadata the operator reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(
        max_length=JOB_NAME_MAX_LENGTH,
        pattern=JOB_NAME_PATTERN,
        description="Job name: a DNS label of at most 50 characters (pod host names add '-worker-<i>').",
    )
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: AwareDatetime | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: AwareDatetime | None = Field(default=None, alias="deletionTimestamp")


class TFTrainingJob(BaseModel):
    """A TensorFlow training job: what the TI SDK's Estimator.fit() submits."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="ignore",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        f"size(self.metadata.name) <= {JOB_NAME_MAX_LENGTH} && "
                        f"self.metadata.name.matches('{JOB_NAME_PATTERN}')"
                    ),
                    "message": (
                        f"metadata.name must be a DNS label of at most {JOB_NAME_MAX_LENGTH} characters "
                        "(lower case letters, digits and '-', starting with a letter): it names the "
                        "job's Service and prefixes its pods' host names"
                    ),
                }
            ]
        },
    )

    api_version: Literal["training.ti.io/v1alpha1"] = Field(
        default="training.ti.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["TFTrainingJob"] = "TFTrainingJob"
    metadata: ObjectMeta
    spec: TFTrainingJobSpec
    status: TFTrainingJobStatus | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TFTrainingJob:
        """Parse a Kubernetes object (a dict, or kopf's body) into the model; raises pydantic's
        ValidationError with the failing field paths."""
        return cls.model_validate(_plain(body))

    def to_body(self) -> dict[str, Any]:
        """The object as Kubernetes JSON: camelCase, no nulls."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    def instances(self) -> list[InstanceRef]:
        """Every instance the job asks for, workers first; worker 0 is the chief."""
        refs = [
            InstanceRef(contract.ROLE_WORKER, i, contract.instance_name(self.name, contract.ROLE_WORKER, i))
            for i in range(self.spec.instance_count)
        ]
        refs += [
            InstanceRef(contract.ROLE_PS, i, contract.instance_name(self.name, contract.ROLE_PS, i))
            for i in range(self.spec.ps_count)
        ]
        return refs

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


def _plain(value: Any) -> Any:
    # kopf hands out Mapping views, not dicts; pydantic wants plain containers.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
