"""Generate the TFTrainingJob CustomResourceDefinition from the pydantic models.

    python -m ti.api.crd > crds/tftrainingjobs.training.ti.io.yaml      (what `make crds` runs)

Pydantic writes JSON Schema; the API server wants an OpenAPI v3 *structural* schema. The conversion
inlines every $ref, turns `anyOf: [X, null]` into `X` with `nullable: true`, `const` into a one-value
enum, drops titles, and swaps the object-store URI pattern for the cluster one (no file://).

Immutability: CEL cannot see status from the spec, so "the spec cannot change once pods exist" is
enforced as "the spec cannot change after creation" — every field but runPolicy.suspend,
runPolicy.stop and runPolicy.ttlSecondsAfterFinished. Pods are created right after the job, so
the difference is a window of milliseconds.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ti.api.models import (
    API_VERSION,
    KIND,
    MUTABLE_RUN_POLICY_FIELDS,
    PLURAL,
    RunPolicy,
    TFTrainingJob,
    TFTrainingJobSpec,
)

GROUP, VERSION = API_VERSION.split("/")
SINGULAR = KIND.lower()
SHORT_NAMES = ["tftj"]
CATEGORIES = ["all", "ti"]
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = f"crds/{CRD_NAME}.yaml"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "TI phase"},
    {"name": "Instances", "type": "integer", "jsonPath": ".spec.instanceCount"},
    {"name": "Type", "type": "string", "jsonPath": ".spec.instanceType", "description": "Instance type"},
    {"name": "Framework", "type": "string", "jsonPath": ".spec.frameworkVersion"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restartCount", "priority": 1},
    {
        "name": "Queue",
        "type": "string",
        "jsonPath": ".metadata.labels.kueue\\.x-k8s\\.io/queue-name",
        "description": "Kueue LocalQueue",
        "priority": 1,
    },
    {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_CLUSTER_PATTERN_KEY = "x-ti-cluster-pattern"
_DROP = {"title", "additionalProperties"}
# Keys in the order a reader of the YAML wants them; the rest keep pydantic's order after these.
_KEY_ORDER = {
    key: i
    for i, key in enumerate(
        [
            "type",
            "description",
            "format",
            "nullable",
            "default",
            "enum",
            "minimum",
            "exclusiveMinimum",
            "maximum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "pattern",
            "minItems",
            "maxItems",
            "maxProperties",
            "required",
            "properties",
            "items",
            "additionalProperties",
        ]
    )
}


class _WithFactoryDefaults(GenerateJsonSchema):
    # Pydantic leaves default_factory fields without a default; a nested object (runPolicy,
    # distribution) needs `default: {}` in the CRD so the API server fills in its inner defaults.
    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                inner = self.generate_inner(schema["schema"])
                return {**inner, "default": {}}
        return super().default_schema(schema)


def openapi_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of TFTrainingJob, as the CRD embeds it."""
    raw = TFTrainingJob.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"type": "string", "description": "training.ti.io/v1alpha1"}
    schema["properties"]["kind"] = {"type": "string", "description": KIND}
    schema["required"] = ["spec"]
    spec = schema["properties"]["spec"]
    spec.setdefault("x-kubernetes-validations", []).extend(immutability_rules())
    return schema


def immutability_rules() -> list[dict[str, str]]:
    """CEL transition rules on spec: every field is frozen except the mutable runPolicy fields."""
    rules = []
    for path, always_present in _frozen_fields():
        if always_present:
            rule = f"self.{path} == oldSelf.{path}"
        else:
            head, _, leaf = path.rpartition(".")
            obj = f"self.{head}" if head else "self"
            old = f"oldSelf.{head}" if head else "oldSelf"
            rule = (
                f"has({obj}.{leaf}) == has({old}.{leaf}) && "
                f"(!has({obj}.{leaf}) || {obj}.{leaf} == {old}.{leaf})"
            )
        rules.append(
            {
                "rule": rule,
                "message": (
                    f"spec.{path} cannot change after the job is created (only runPolicy.suspend, "
                    "runPolicy.stop and runPolicy.ttlSecondsAfterFinished can); create a new job instead"
                ),
            }
        )
    return rules


def _frozen_fields() -> list[tuple[str, bool]]:
    # (camelCase path below spec, whether the API server always has a value for it after defaulting)
    fields: list[tuple[str, bool]] = []
    for name, info in TFTrainingJobSpec.model_fields.items():
        alias = info.alias or name
        if alias == "runPolicy":
            for inner_name, inner in RunPolicy.model_fields.items():
                inner_alias = inner.alias or inner_name
                if inner_alias not in MUTABLE_RUN_POLICY_FIELDS:
                    fields.append((f"runPolicy.{inner_alias}", _always_present(inner)))
            continue
        fields.append((alias, _always_present(info)))
    return fields


def _always_present(info: Any) -> bool:
    if info.is_required():
        return True
    if info.default_factory is not None:
        return isinstance(info.default_factory(), BaseModel)
    return info.default is not None


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        node = {**target, **node}  # the field's own description and default win over the model's
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_structural(inner, defs), **node}
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {variants}")
        node = {**_structural(variants[0], defs), **node, "nullable": True}
        if node.get("default", ...) is None:
            del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if _CLUSTER_PATTERN_KEY in node:
        node["pattern"] = node.pop(_CLUSTER_PATTERN_KEY)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "default" and value is None:
            continue
        if key in ("properties",):
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if "exclusiveMinimum" in out and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return dict(sorted(out.items(), key=lambda item: _KEY_ORDER.get(item[0], len(_KEY_ORDER))))


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render_yaml() -> str:
    """The CRD as the YAML committed under crds/."""
    header = (
        "# Generated by `python -m ti.api.crd` (make crds) from the models in src/ti/api/. Do not edit.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)


def main() -> None:
    sys.stdout.write(render_yaml())


if __name__ == "__main__":
    main()
