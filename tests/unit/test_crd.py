from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ti.api import TFTrainingJobSpec
from ti.api.crd import CRD_FILE, crd, immutability_rules, openapi_schema, render_yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_is_fresh() -> None:
    committed = (ROOT / CRD_FILE).read_text(encoding="utf-8")
    assert committed == render_yaml(), (
        f"{CRD_FILE} is stale: run make crds (python -m ti.api.crd > {CRD_FILE})"
    )


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key in ("properties",):
                for name, prop in value.items():
                    yield from _walk(prop, f"{path}.{name}")
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                yield from _walk(value, f"{path}[]")


def test_schema_is_structural() -> None:
    text = yaml.safe_dump(openapi_schema())
    for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "const:", "title:", "$defs", "x-ti-"):
        assert forbidden not in text
    for path, node in _walk(openapi_schema()):
        assert "type" in node, f"{path} has no type"
        assert node.get("additionalProperties") is not False
        assert "default" not in node or node["default"] is not None


def test_every_field_is_described_for_kubectl_explain() -> None:
    schema = openapi_schema()
    for top in ("spec", "status"):
        for path, node in _walk(schema["properties"][top], top):
            if path.endswith("[]"):
                continue
            assert node.get("description"), f"{path} has no description"


def test_names_columns_and_subresource() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "tftrainingjobs.training.ti.io"
    assert spec["group"] == "training.ti.io"
    assert spec["names"]["kind"] == "TFTrainingJob"
    assert spec["names"]["plural"] == "tftrainingjobs"
    assert spec["names"]["shortNames"] == ["tftj"]
    assert spec["names"]["categories"] == ["all", "ti"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    for name in ("Phase", "Instances", "Type", "Framework", "Reason", "Age"):
        assert name in columns


def test_cluster_refuses_file_uris() -> None:
    props = openapi_schema()["properties"]["spec"]["properties"]
    for field in ("outputPath", "sourceDir", "checkpointPath"):
        pattern = props[field]["pattern"]
        assert re.match(pattern, "cos://bucket-1250000000/x")
        assert not re.match(pattern, "file:///tmp/x")
    values = props["inputs"]["additionalProperties"]["pattern"]
    assert not re.match(values, "file:///tmp/x")


def test_defaults_match_the_models() -> None:
    props = openapi_schema()["properties"]["spec"]["properties"]
    model = TFTrainingJobSpec.model_fields
    assert props["instanceCount"]["default"] == model["instance_count"].default == 1
    assert props["maxRunSeconds"]["default"] == 86400
    assert props["volumeSizeGB"]["default"] == 30
    assert props["runPolicy"]["default"] == {}
    assert props["distribution"]["default"] == {}
    assert props["runPolicy"]["properties"]["backoffLimit"]["default"] == 3
    assert props["runPolicy"]["properties"]["cleanPodPolicy"]["enum"] == ["None", "Running", "All"]
    assert props["distribution"]["properties"]["type"]["default"] == "multiWorkerMirrored"
    assert props["runPolicy"]["properties"]["stop"]["type"] == "boolean"


def test_optional_fields_are_nullable() -> None:
    props = openapi_schema()["properties"]["spec"]["properties"]
    assert props["image"]["nullable"] is True
    assert "nullable" not in props["entryPoint"]


def test_immutability_rules_spare_suspend_stop_and_ttl() -> None:
    rules = " ".join(r["rule"] for r in immutability_rules())
    for frozen in (
        "instanceType",
        "instanceCount",
        "inputs",
        "hyperparameters",
        "runPolicy.backoffLimit",
        "distribution",
        "env",
        "image",
        "outputPath",
    ):
        assert f"self.{frozen} == oldSelf.{frozen}" in rules
    for mutable in ("suspend", "stop", "ttlSecondsAfterFinished"):
        assert mutable not in rules
    spec_rules = openapi_schema()["properties"]["spec"]["x-kubernetes-validations"]
    assert all("message" in r for r in spec_rules)


def test_cel_rules_for_names_and_channels() -> None:
    schema = openapi_schema()
    root_rules = " ".join(r["rule"] for r in schema["x-kubernetes-validations"])
    assert "self.metadata.name" in root_rules
    inputs = schema["properties"]["spec"]["properties"]["inputs"]
    assert inputs["maxProperties"] == 64
    assert "k.matches" in inputs["x-kubernetes-validations"][0]["rule"]
    distribution = schema["properties"]["spec"]["properties"]["distribution"]
    assert "parameterServerCount" in distribution["x-kubernetes-validations"][0]["rule"]


def test_cel_costs_are_bounded() -> None:
    # The API server refuses CEL rules whose worst case is unbounded; every collection and string a
    # rule walks or compares needs a bound.
    props = openapi_schema()["properties"]["spec"]["properties"]
    for name in ("hyperparameters", "inputs"):
        assert "maxProperties" in props[name]
        assert "maxLength" in props[name]["additionalProperties"]
    for name in ("env", "metricDefinitions"):
        assert "maxItems" in props[name]
    for name in ("image", "entryPoint", "outputPath", "sourceDir", "checkpointPath", "instanceType", "role"):
        assert "maxLength" in props[name]
