"""The operator's settings: every TI_* variable the operator process reads, read here and nowhere else.

`Settings.from_env` is the one reader. A value that is set but wrong stops the operator at start-up
with the variable's name, what was wrong and what is allowed: a typo must not run with a default. An
empty value means unset (the chart renders optional settings as ""). The chart renders each variable
from a documented value; a unit test checks that SETTINGS, the chart's rendered env and
docs/install.md list the same variables.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ti import contract

_CPU = r"^[0-9]+(\.[0-9]+)?m?$"
_MEMORY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"


class OperatorConfig(BaseModel):
    """The settings that shape every pod the operator renders (and local mode renders)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    toolkit_image: str | None = Field(
        default=None, description="Image of the fetch and upload steps; unset: the catalog's toolkitImage."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    storage_secret: str | None = Field(
        default=None, description="Secret with object-store credentials for jobs without storageSecretRef."
    )
    cos_region: str | None = Field(default=None, description="TENCENTCLOUD_REGION for the toolkit.")
    cos_endpoint: str | None = Field(
        default=None, pattern=r"^https?://\S+$", description="A private or test COS/S3 URL."
    )
    checkpoint_sync_seconds: int = Field(default=60, ge=1)
    stop_grace_seconds: int = Field(
        default=30, ge=0, description="SIGTERM grace of a stopped or suspended pod, to upload what it has."
    )
    toolkit_cpu: str = Field(default="100m", pattern=_CPU)
    toolkit_memory: str = Field(default="256Mi", pattern=_MEMORY)
    toolkit_memory_limit: str = Field(default="1Gi", pattern=_MEMORY)
    resync_seconds: int = Field(default=60, ge=1, description="How often a running job is looked at anyway.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """The pod-shaping part of `Settings.from_env`."""
        return Settings.from_env(environ).config


LIMITED_WORKERS = 256


class Settings(BaseModel):
    """Everything the operator process is configured with: its own tuning and the OperatorConfig."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default=8, ge=1, le=256)
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    qps: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    burst: int = Field(default=0, ge=0)
    catalog_file: str | None = None
    config: OperatorConfig = Field(default_factory=OperatorConfig)

    @property
    def reconcile_threads(self) -> int:
        """Workers: TI_OPERATOR_WORKERS, but 256 under a client rate limit. There a reconcile spends
        most of its time waiting for tokens, and the bucket serves pod creates first
        (`ti.operator.ratelimit`) only if enough reconciles are under way to have some to serve."""
        return max(self.workers, LIMITED_WORKERS) if self.qps > 0 else self.workers

    @property
    def client_burst(self) -> int:
        """The rate limit's burst: TI_OPERATOR_BURST, or QPS rounded up when that is 0."""
        return self.burst or max(1, math.ceil(self.qps))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting in SETTINGS from `environ` (default: os.environ); SettingsError if wrong."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"config": {}}
        given: dict[tuple[str, ...], Setting] = {}
        for setting in SETTINGS:
            raw = env.get(setting.variable, "").strip()
            if not raw:
                continue
            *parent, name = setting.field.split(".")
            (values[parent[0]] if parent else values)[name] = raw
            given[tuple(setting.field.split("."))] = setting
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = []
            for e in err.errors():
                loc = tuple(str(part) for part in e["loc"])
                setting = next(given[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in given)
                raw = env.get(setting.variable, "").strip()
                # pydantic's pattern message quotes a regex; the allowed text says it in words.
                what = "not of the allowed form" if e["type"] == "string_pattern_mismatch" else e["msg"]
                problems.append(f"{setting.variable}={raw!r}: {what}; allowed: {setting.allowed}")
            raise SettingsError(problems) from None


class SettingsError(ValueError):
    """Settings that are set but wrong; the message names each variable, its value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid operator settings:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Setting:
    """One environment variable: the field it sets (`config.x` is OperatorConfig's) and what it takes."""

    variable: str
    field: str
    allowed: str


SETTINGS: tuple[Setting, ...] = (
    Setting("TI_OPERATOR_WORKERS", "workers", "an integer from 1 to 256 (default 8)"),
    Setting(
        "TI_OPERATOR_METRICS_PORT", "metrics_port", "a port from 1 to 65535, or 0 for none (default 9090)"
    ),
    Setting("TI_OPERATOR_QPS", "qps", "requests per second, a number >= 0; 0: no limit (default)"),
    Setting("TI_OPERATOR_BURST", "burst", "an integer >= 0; 0: TI_OPERATOR_QPS rounded up (default)"),
    Setting("TI_CATALOG_FILE", "catalog_file", "the path of a catalog YAML file (default: none)"),
    Setting("TI_TOOLKIT_IMAGE", "config.toolkit_image", "an image reference (default: the catalog's)"),
    Setting("TI_IMAGE_PULL_POLICY", "config.image_pull_policy", "Always, IfNotPresent (default) or Never"),
    Setting("TI_STORAGE_SECRET", "config.storage_secret", "a Secret name (default: none)"),
    Setting("TI_COS_REGION", "config.cos_region", "a COS region such as ap-guangzhou (default: none)"),
    Setting(contract.COS_ENDPOINT, "config.cos_endpoint", "an http:// or https:// URL (default: none)"),
    Setting("TI_CHECKPOINT_SYNC_SECONDS", "config.checkpoint_sync_seconds", "an integer >= 1 (default 60)"),
    Setting("TI_STOP_GRACE_SECONDS", "config.stop_grace_seconds", "an integer >= 0 (default 30)"),
    Setting("TI_TOOLKIT_CPU", "config.toolkit_cpu", "a CPU quantity such as 100m or 1 (default 100m)"),
    Setting("TI_TOOLKIT_MEMORY", "config.toolkit_memory", "a memory quantity such as 256Mi (default 256Mi)"),
    Setting(
        "TI_TOOLKIT_MEMORY_LIMIT",
        "config.toolkit_memory_limit",
        "a memory quantity such as 1Gi (default 1Gi)",
    ),
    Setting("TI_RESYNC_SECONDS", "config.resync_seconds", "an integer >= 1 (default 60)"),
)
