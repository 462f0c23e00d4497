"""The TFTrainingJob's spec: what to train, on what, with which data, and where the model goes.

Field descriptions are what `kubectl explain tftj.spec.<field>` prints, so they speak to users.
CEL rules live beside the fields they guard (`x-kubernetes-validations` in `json_schema_extra`) and
the same checks run in Python validators, because local mode never meets an API server.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ti import contract
from ti.api.common import (
    _ENV_NAME,
    _RESERVED_ENV_RULE,
    _VERSION,
    DNS_SUBDOMAIN_MAX_LENGTH,
    DNS_SUBDOMAIN_PATTERN,
    HYPERPARAMETER_NAME_PATTERN,
    MAX_HYPERPARAMETERS,
    MAX_INSTANCES,
    MAX_PARAMETER_SERVERS,
    MAX_RUN_SECONDS,
    MAX_VOLUME_GB,
    CleanPodPolicy,
    DistributionType,
    HyperparameterValue,
    ObjectUri,
    SpecModel,
)


class Distribution(SpecModel):
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


class SecretRef(SpecModel):
    """A Secret in the job's namespace."""

    name: str = Field(
        max_length=DNS_SUBDOMAIN_MAX_LENGTH,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the Secret.",
    )


class EnvVar(SpecModel):
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


class MetricDefinition(SpecModel):
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


class RunPolicy(SpecModel):
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
            "them. On a job labelled kueue.x-k8s.io/queue-name it also deactivates the job's Workload, "
            "giving its quota back, and false puts the job back in its queue. Kueue never sets it: a "
            "queued job waits in phase Queued until Kueue admits its Workload."
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


class TFTrainingJobSpec(SpecModel):
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
