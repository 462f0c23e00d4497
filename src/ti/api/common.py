"""What the TFTrainingJob API's models share: its names, the patterns and limits of its fields (the
SDK imports these instead of copying them), the base models, and the enums of spec and status.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ti import contract

API_VERSION = f"{contract.GROUP}/v1alpha1"
KIND = "TFTrainingJob"
PLURAL = "tftrainingjobs"

# Object-store URIs. The model also takes file:// (local mode); the CRD swaps in the cluster pattern,
# so the API server refuses file:// (a path on one node means nothing to a pod elsewhere).
CLUSTER_URI_PATTERN = r"^(cos|s3)://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
URI_PATTERN = r"^((cos|s3)://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.*)$"

# The job name becomes the headless Service's name (a DNS-1035 label) and the prefix of every pod's
# hostname (a DNS label of at most 63): "<job>-worker-999" must still fit.
JOB_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
JOB_NAME_MAX_LENGTH = 50
MAX_INSTANCES = 1000
# Limits of the spec that the SDK also checks when an estimator is built (ti._sdk.arguments).
DNS_SUBDOMAIN_MAX_LENGTH = 253
MAX_HYPERPARAMETERS = 256
HYPERPARAMETER_VALUE_MAX_LENGTH = 4096
MAX_PARAMETER_SERVERS = 100
MAX_VOLUME_GB = 16384
MAX_RUN_SECONDS = 30 * 86400

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_VERSION = r"^[0-9]+(\.[0-9]+){0,2}$"
_RESERVED_ENV_RULE = "!self.name.startsWith('TM_') && self.name != 'TF_CONFIG'"
HYPERPARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"

ObjectUri = Annotated[
    str,
    Field(
        max_length=2048, pattern=URI_PATTERN, json_schema_extra={"x-ti-cluster-pattern": CLUSTER_URI_PATTERN}
    ),
]
HyperparameterValue = Annotated[str, Field(max_length=HYPERPARAMETER_VALUE_MAX_LENGTH)]


class SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )


class StatusModel(BaseModel):
    # Status is written by the operator; a newer operator's extra fields must not break an older reader.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class DistributionType(str, Enum):
    """How the instances of a multi-instance job train together."""

    MULTI_WORKER_MIRRORED = "multiWorkerMirrored"
    PARAMETER_SERVER = "parameterServer"


class CleanPodPolicy(str, Enum):
    """Which pods the operator deletes once the job has finished."""

    NONE = "None"
    RUNNING = "Running"
    ALL = "All"


class Phase(str, Enum):
    """The job's phase, in the words TI users already read."""

    PENDING = "Pending"
    STARTING = "Starting"
    DOWNLOADING = "Downloading"
    TRAINING = "Training"
    UPLOADING = "Uploading"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"

    @property
    def finished(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.STOPPED)


class ConditionType(str, Enum):
    """Kubernetes-style condition types on a TFTrainingJob."""

    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    ADMITTED = "Admitted"


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class InstancePhase(str, Enum):
    """Where one instance (one pod) stands."""

    PENDING = "Pending"
    STARTING = "Starting"
    DOWNLOADING = "Downloading"
    TRAINING = "Training"
    UPLOADING = "Uploading"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETED = "Deleted"


# The fields of spec.runPolicy that may change after creation (the rest of spec is frozen by CEL, see
# crd.py).
MUTABLE_RUN_POLICY_FIELDS = ("suspend", "stop", "ttlSecondsAfterFinished")
