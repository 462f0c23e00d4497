"""The TFTrainingJob API: spec and status as pydantic models, the one source of truth.

The CRD (`ti.api.crd`), the API reference (`ti.api.docs`) and every default come from these classes.
Field descriptions are what `kubectl explain tftj.spec.<field>` prints, so they speak to users.
CEL rules live beside the fields they guard (`x-kubernetes-validations` in `json_schema_extra`) and
the same checks run in Python validators, because local mode never meets an API server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
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


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )


class _StatusModel(BaseModel):
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


# ---- spec ---------------------------------------------------------------------------------------------


class Distribution(_Model):
    """How a multi-instance job distributes training; TF_CONFIG is written to match."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.type == 'parameterServer' || !has(self.parameterServerCount)",
                    "message": "parameterServerCount is only allowed with type parameterServer",
                }
            ]
        }
    )

    type: DistributionType = Field(
        default=DistributionType.MULTI_WORKER_MIRRORED,
        description=(
            "multiWorkerMirrored (tf.distribute.MultiWorkerMirroredStrategy: every instance is a worker) "
            "or parameterServer (instances are the chief and workers, plus parameterServerCount "
            "parameter-server pods of the same instance type)."
        ),
    )
    parameter_server_count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARAMETER_SERVERS,
        description="Number of parameter-server pods; only with type parameterServer, default 1.",
    )

    @model_validator(mode="after")
    def _count_only_with_ps(self) -> Distribution:
        if self.parameter_server_count is not None and self.type != DistributionType.PARAMETER_SERVER:
            raise ValueError("parameterServerCount is only allowed with type parameterServer")
        return self

    @property
    def ps_count(self) -> int:
        if self.type != DistributionType.PARAMETER_SERVER:
            return 0
        return self.parameter_server_count or 1


class SecretRef(_Model):
    """A Secret in the job's namespace."""

    name: str = Field(
        max_length=DNS_SUBDOMAIN_MAX_LENGTH,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the Secret.",
    )


class EnvVar(_Model):
    """An environment variable for the training container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": _RESERVED_ENV_RULE,
                    "message": "TM_* and TF_CONFIG are set by the platform and cannot be overridden",
                }
            ]
        }
    )

    name: str = Field(max_length=256, pattern=_ENV_NAME, description="Variable name.")
    value: str = Field(default="", max_length=32768, description="Variable value.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name.startswith("TM_") or name == contract.TF_CONFIG:
            raise ValueError("TM_* and TF_CONFIG are set by the platform and cannot be overridden")
        return name


class MetricDefinition(_Model):
    """A metric read from the training log: the first group of `regex` on a log line is its value."""

    name: str = Field(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_:./-]*$", description="Metric name.")
    regex: str = Field(
        min_length=1,
        max_length=1024,
        description="Regular expression matched against each log line; its first group is the value.",
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        try:
            compiled = re.compile(regex)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        if compiled.groups < 1:
            raise ValueError("the regular expression needs a group that captures the value")
        return regex


class RunPolicy(_Model):
    """How the job runs: retries, timeouts, clean-up, scheduling, suspend and stop."""

    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=100,
        description=(
            "How many times the job is retried (all instances together) after a platform fault: "
            "exit code 128 or above, an evicted, preempted or deleted pod, a lost node. "
            "Exit codes 1-127 are the script's own errors and are never retried."
        ),
    )
    scheduling_timeout_seconds: int = Field(
        default=900,
        ge=1,
        le=7 * 86400,
        description=(
            "How long every pod of the job may wait to be scheduled and to start its containers. "
            "Past it the job fails with reason Unschedulable and all its pods are deleted, "
            "so a half-scheduled job never holds GPUs."
        ),
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete the job (and its pods) this many seconds after it finished. Unset: keep it.",
    )
    clean_pod_policy: CleanPodPolicy = Field(
        default=CleanPodPolicy.RUNNING,
        description=(
            "Which pods to delete when the job finishes: None keeps all, Running deletes those still "
            "running (parameter servers, the other workers of a failed job), All deletes every pod. "
            "Logs are kept under <outputPath>/<job>/logs/ either way."
        ),
    )
    suspend: bool = Field(
        default=False,
        description=(
            "true deletes the job's pods and keeps the job (phase Suspended); false again recreates "
            "them. Queueing systems such as Kueue use it to admit jobs."
        ),
    )
    stop: bool = Field(
        default=False,
        description=(
            "true stops the job: its pods get SIGTERM and a grace period to upload what they have, "
            "then the job ends in phase Stopped. Cannot be undone."
        ),
    )
    scheduler_name: str | None = Field(
        default=None,
        max_length=253,
        description="schedulerName of the pods, e.g. volcano for gang scheduling.",
    )
    priority_class_name: str | None = Field(
        default=None,
        max_length=DNS_SUBDOMAIN_MAX_LENGTH,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="priorityClassName of the pods.",
    )


# The fields that may change after creation (everything else in spec is frozen by CEL, see crd.py).
MUTABLE_RUN_POLICY_FIELDS = ("suspend", "stop", "ttlSecondsAfterFinished")


class TFTrainingJobSpec(_Model):
    """What to train, on what, with which data, and where the model goes (the TI SDK's Estimator)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.frameworkVersion) || has(self.image)",
                    "message": "set frameworkVersion (a preset TensorFlow image) or image (a custom image)",
                },
            ]
        }
    )

    role: str = Field(
        default="default",
        max_length=DNS_SUBDOMAIN_MAX_LENGTH,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="The ServiceAccount the training pods run as (the TI SDK's role).",
    )
    instance_type: str = Field(
        min_length=1,
        max_length=128,
        description=(
            "Instance type from the operator's catalog, e.g. ML.GN8.3XLARGE112; it sets CPU, memory, "
            "GPUs, node selector and tolerations of every pod. local and local_gpu are for local mode only."
        ),
    )
    instance_count: int = Field(
        default=1,
        ge=1,
        le=MAX_INSTANCES,
        description="Number of training instances (pods), each of instanceType.",
    )
    framework_version: str | None = Field(
        default=None,
        max_length=32,
        pattern=_VERSION,
        description="TensorFlow version of the preset image, e.g. 1.14.0, 2.0.0 or 2.16.",
    )
    py_version: Literal["py3"] = Field(default="py3", description="Python version; only py3.")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="A custom training image; overrides the preset image of frameworkVersion.",
    )
    entry_point: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$",
        description="The training script, relative to sourceDir, e.g. train.py.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!self.contains('..')", "message": "entryPoint must stay inside sourceDir"}
            ]
        },
    )
    source_dir: ObjectUri | None = Field(
        default=None,
        description="Object-store URI of sourcedir.tar.gz holding entryPoint and its modules.",
    )
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=dict,
        max_length=MAX_HYPERPARAMETERS,
        description=(
            "Hyperparameters, passed to the script as --key value arguments, in "
            "/opt/ml/input/config/hyperparameters.json and as TM_HPS (JSON)."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, k.matches('{HYPERPARAMETER_NAME_PATTERN}'))",
                    "message": "hyperparameter names are letters, digits, '_', '.' and '-', at most 128",
                }
            ]
        },
    )
    inputs: dict[str, ObjectUri] = Field(
        default_factory=dict,
        max_length=64,
        description=(
            "Input channels: channel name -> object-store URI (cos://bucket-appid/prefix). Each is "
            "downloaded to /opt/ml/input/data/<name> and announced as TM_CHANNEL_<NAME>."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, k.matches('{contract.CHANNEL_NAME_PATTERN}'))",
                    "message": (
                        "channel names start with a letter and hold only letters, digits and '_' "
                        "(at most 63), so that TM_CHANNEL_<NAME> is a valid variable"
                    ),
                }
            ]
        },
    )
    output_path: ObjectUri = Field(
        description=(
            "Object-store URI under which the job writes <job>/output/model.tar.gz, "
            "<job>/output/output.tar.gz and <job>/logs/."
        ),
    )
    checkpoint_path: ObjectUri | None = Field(
        default=None,
        description=(
            "Object-store URI for /opt/ml/checkpoints: restored at start and synced during and after "
            "training, so a retried job resumes instead of starting over."
        ),
    )
    distribution: Distribution = Field(
        default_factory=Distribution,
        description="How instances train together: TF_CONFIG and, with parameterServer, extra pods.",
    )
    storage_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with the object-store credentials (TENCENTCLOUD_SECRETID, TENCENTCLOUD_SECRETKEY, "
            "optionally TENCENTCLOUD_SESSIONTOKEN). Given only to the download and upload steps, never "
            "to the training container. Unset: the operator's default Secret."
        ),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment variables for the training container.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    volume_size_gb: int = Field(
        default=30,
        ge=1,
        le=MAX_VOLUME_GB,
        alias="volumeSizeGB",
        description="Size limit in GiB of each instance's /opt/ml volume (code, data, model, output).",
    )
    max_run_seconds: int = Field(
        default=86400,
        ge=1,
        le=MAX_RUN_SECONDS,
        description=(
            "The longest the job may run, counted from its first instance's start; past it the job "
            "fails with reason MaxRunExceeded (the TI SDK's train_max_run)."
        ),
    )
    metric_definitions: list[MetricDefinition] = Field(
        default_factory=list,
        max_length=64,
        description="Metrics to read from the training log into status.metrics.",
    )
    run_policy: RunPolicy = Field(
        default_factory=RunPolicy,
        description="Retries, timeouts, clean-up, scheduling, suspend and stop.",
    )

    @field_validator("inputs")
    @classmethod
    def _channel_names(cls, inputs: dict[str, str]) -> dict[str, str]:
        for name in inputs:
            if not re.match(contract.CHANNEL_NAME_PATTERN, name):
                raise ValueError(
                    f"channel name {name!r} must start with a letter and hold only letters, digits and "
                    "'_' (at most 63), so that TM_CHANNEL_<NAME> is a valid variable"
                )
        upper = [name.upper() for name in inputs]
        if len(set(upper)) != len(upper):
            raise ValueError("channel names must differ in more than case (they become TM_CHANNEL_<NAME>)")
        return inputs

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameter_names(cls, hyperparameters: dict[str, str]) -> dict[str, str]:
        for key in hyperparameters:
            if not re.match(HYPERPARAMETER_NAME_PATTERN, key):
                raise ValueError(
                    f"hyperparameter name {key!r}: letters, digits, '_', '.' and '-', at most 128"
                )
        return hyperparameters

    @field_validator("entry_point")
    @classmethod
    def _inside_source(cls, entry_point: str) -> str:
        if ".." in entry_point:
            raise ValueError("entryPoint must stay inside sourceDir")
        return entry_point

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [var.name for var in env]
        if len(set(names)) != len(names):
            raise ValueError("env names must be unique")
        return env

    @model_validator(mode="after")
    def _image_or_framework(self) -> TFTrainingJobSpec:
        if self.framework_version is None and self.image is None:
            raise ValueError("set frameworkVersion (a preset TensorFlow image) or image (a custom image)")
        return self

    @property
    def ps_count(self) -> int:
        return self.distribution.ps_count

    @property
    def distributed(self) -> bool:
        """True when instances need TF_CONFIG and a headless Service to find each other."""
        return self.instance_count > 1 or self.ps_count > 0


# ---- status -------------------------------------------------------------------------------------------


class Condition(_StatusModel):
    """A Kubernetes-style condition."""

    type: ConditionType = Field(description="Created, Running, Restarting, Succeeded, Failed or Suspended.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="CamelCase reason of the last transition.")
    message: str | None = Field(default=None, description="What happened, for humans.")
    last_transition_time: AwareDatetime | None = Field(
        default=None, description="When status last changed (not reason or message)."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed from."
    )


class InstanceStatus(_StatusModel):
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


class TFTrainingJobStatus(_StatusModel):
    """What is happening to the job, and why; written by the operator only."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "Pending, Starting, Downloading, Training, Uploading, Completed, Failed, Stopping, "
            "Stopped or Suspended."
        ),
    )
    reason: str | None = Field(
        default=None,
        description=(
            "CamelCase reason of the phase, e.g. InvalidSpec, TrainingFailed, UploadFailed, "
            "BackoffLimitExceeded, Unschedulable, MaxRunExceeded, Stopped."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Kubernetes conditions: Created, Running, Restarting, Succeeded, Failed, Suspended.",
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


def status_body(status: TFTrainingJobStatus) -> dict[str, Any]:
    """A status as the JSON the API server stores: camelCase, no nulls."""
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def _plain(value: Any) -> Any:
    # kopf hands out Mapping views, not dicts; pydantic wants plain containers.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
