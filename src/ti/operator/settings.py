"""The operator's settings: every TI_* variable it reads, in one place, with defaults.

The chart renders each of them from a documented value; a test checks that the chart, this module and
docs/install.md list the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ti import contract


class OperatorConfig(BaseModel):
    """Settings of the operator that shape every pod; from the environment (`from_env`) or Helm values."""

    model_config = ConfigDict(frozen=True)

    toolkit_image: str | None = Field(
        default=None, description="Image of the fetch and upload steps; unset: the catalog's toolkitImage."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    storage_secret: str | None = Field(
        default=None, description="Secret with object-store credentials for jobs without storageSecretRef."
    )
    cos_region: str | None = Field(default=None, description="TENCENTCLOUD_REGION for the toolkit.")
    cos_endpoint: str | None = Field(
        default=None, description="TI_COS_ENDPOINT: a private or test COS/S3 URL."
    )
    checkpoint_sync_seconds: int = Field(default=60, ge=1)
    stop_grace_seconds: int = Field(
        default=30, ge=0, description="SIGTERM grace of a stopped or suspended pod, to upload what it has."
    )
    toolkit_cpu: str = "100m"
    toolkit_memory: str = "256Mi"
    toolkit_memory_limit: str = "1Gi"
    resync_seconds: int = Field(default=60, ge=1, description="How often a running job is looked at anyway.")

    ENV: ClassVar[dict[str, str]] = {
        "toolkit_image": "TI_TOOLKIT_IMAGE",
        "image_pull_policy": "TI_IMAGE_PULL_POLICY",
        "storage_secret": "TI_STORAGE_SECRET",
        "cos_region": "TI_COS_REGION",
        "cos_endpoint": contract.COS_ENDPOINT,
        "checkpoint_sync_seconds": "TI_CHECKPOINT_SYNC_SECONDS",
        "stop_grace_seconds": "TI_STOP_GRACE_SECONDS",
        "resync_seconds": "TI_RESYNC_SECONDS",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read the settings from environment variables (ENV maps each field to its variable)."""
        env = os.environ if environ is None else environ
        values = {name: env[var] for name, var in cls.ENV.items() if env.get(var)}
        return cls.model_validate(values)
