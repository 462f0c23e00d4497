"""Instance types and framework images: what `instanceType` and `frameworkVersion` mean.

The built-in catalog (defaults.yaml beside this file) is overlaid by a platform's own YAML file
(`load_catalog(path)`): the operator's TI_CATALOG_FILE setting, which the Helm chart mounts, or the
SDK's TI_CATALOG_FILE. This module reads no environment; its callers pass the path. Lookups that fail raise `CatalogError` with
reason InvalidSpec and the valid choices, which the operator copies into the job's status.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ti.reasons import Reason

CATALOG_FILE_ENV = "TI_CATALOG_FILE"
INVALID_SPEC = Reason.INVALID_SPEC


class CatalogError(ValueError):
    """An instance type or framework version the catalog does not have (or a broken catalog file)."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = INVALID_SPEC) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class InstanceType(_Model):
    """What one instance (one pod) of a type gets."""

    name: str = ""
    description: str = ""
    cpu: float = Field(gt=0, description="Cores; TM_NUM_CPUS.")
    memory: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
    gpus: int = Field(default=0, ge=0)
    gpu_resource: str = "nvidia.com/gpu"
    gpu_model: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    local: bool = Field(default=False, description="Local mode only; refused in a cluster.")

    @property
    def num_cpus(self) -> int:
        """TM_NUM_CPUS: whole cores, at least one."""
        return max(1, math.ceil(self.cpu))

    @property
    def cpu_quantity(self) -> str:
        if float(self.cpu).is_integer():
            return str(int(self.cpu))
        return f"{round(self.cpu * 1000)}m"


class FrameworkImages(_Model):
    """The preset images of one TensorFlow version."""

    cpu: str = Field(min_length=1)
    gpu: str = Field(min_length=1)


class Catalog(_Model):
    """Instance types, framework images and the toolkit image."""

    instance_types: dict[str, InstanceType] = Field(default_factory=dict)
    frameworks: dict[str, FrameworkImages] = Field(default_factory=dict)
    toolkit_image: str = Field(min_length=1)

    def instance_type(self, name: str, *, cluster: bool = True) -> InstanceType:
        """The instance type called `name`; in a cluster (`cluster=True`) local types are refused."""
        found = self.instance_types.get(name)
        if found is None:
            # Tolerate case slips (ml.gn8.3xlarge112), never guess beyond that.
            matches = [t for key, t in self.instance_types.items() if key.lower() == name.lower()]
            found = matches[0] if len(matches) == 1 else None
        if found is None:
            choices = sorted(k for k, t in self.instance_types.items() if not (cluster and t.local))
            raise CatalogError(
                f"spec.instanceType: unknown instance type {name!r}{_did_you_mean(name, choices)}; "
                f"valid types: {', '.join(choices)}",
                field="spec.instanceType",
            )
        if cluster and found.local:
            raise CatalogError(
                f"spec.instanceType: {found.name!r} runs on your own machine (local mode) and cannot "
                "run in a cluster; choose a cluster type: "
                + ", ".join(sorted(k for k, t in self.instance_types.items() if not t.local)),
                field="spec.instanceType",
            )
        return found

    def framework_image(self, version: str, *, gpu: bool) -> str:
        """The preset TensorFlow image of `version`, GPU variant when `gpu`."""
        images = self.frameworks.get(version)
        if images is None:
            wanted = _normal_version(version)
            images = next((v for k, v in self.frameworks.items() if _normal_version(k) == wanted), None)
        if images is None:
            choices = sorted(self.frameworks, key=_version_key)
            raise CatalogError(
                f"spec.frameworkVersion: no preset TensorFlow image for version {version!r}; "
                f"valid versions: {', '.join(choices)} (or set spec.image to a custom image)",
                field="spec.frameworkVersion",
            )
        return images.gpu if gpu else images.cpu

    def training_image(self, *, image: str | None, framework_version: str | None, gpu: bool) -> str:
        """The training container's image: a custom image wins over the preset of the version."""
        if image:
            return image
        if not framework_version:
            raise CatalogError(
                "spec: set frameworkVersion (a preset TensorFlow image) or image (a custom image)",
                field="spec.frameworkVersion",
            )
        return self.framework_image(framework_version, gpu=gpu)


def default_catalog() -> Catalog:
    """The built-in catalog (defaults.yaml shipped with the package)."""
    text = resources.files(__package__).joinpath("defaults.yaml").read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text), source="built-in defaults.yaml")


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """The catalog in force: the built-in one, overlaid by the file at `path` when one is given."""
    base = default_catalog()
    chosen = path or None
    if chosen is None:
        return base
    try:
        data = yaml.safe_load(Path(chosen).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CatalogError(
            f"cannot read catalog file {str(chosen)!r}: {err}", reason=Reason.INVALID_CATALOG
        ) from err
    if not isinstance(data, Mapping):
        raise CatalogError(f"catalog file {str(chosen)!r} is not a mapping", reason=Reason.INVALID_CATALOG)
    data = dict(data)
    if data.pop("inheritDefaults", True):
        base_data = base.model_dump(by_alias=True)
        data = {
            "instanceTypes": {**base_data["instanceTypes"], **(data.get("instanceTypes") or {})},
            "frameworks": {**base_data["frameworks"], **(data.get("frameworks") or {})},
            "toolkitImage": data.get("toolkitImage") or base.toolkit_image,
        }
    return _parse(data, source=str(chosen))


def _parse(data: Mapping[str, Any], *, source: str) -> Catalog:
    data = dict(data)
    types = data.get("instanceTypes") or {}
    # The name lives in the key; copy it into each entry so an InstanceType knows its own name.
    data["instanceTypes"] = {name: {**dict(spec or {}), "name": name} for name, spec in types.items()}
    try:
        return Catalog.model_validate(data)
    except ValidationError as err:
        raise CatalogError(f"invalid catalog in {source}: {err}", reason=Reason.INVALID_CATALOG) from err


def _normal_version(version: str) -> tuple[int, ...]:
    try:
        parts = [int(p) for p in version.strip().split(".")]
    except ValueError:
        return ()
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _version_key(version: str) -> tuple[int, ...]:
    return _normal_version(version) or (10**9,)


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = [
    "CATALOG_FILE_ENV",
    "INVALID_SPEC",
    "Catalog",
    "CatalogError",
    "FrameworkImages",
    "InstanceType",
    "default_catalog",
    "load_catalog",
]
