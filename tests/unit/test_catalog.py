from __future__ import annotations

from pathlib import Path

import pytest

from ti.catalog import CATALOG_FILE_ENV, CatalogError, default_catalog, load_catalog

pytestmark = pytest.mark.unit


def test_seed_instance_type() -> None:
    t = default_catalog().instance_type("ML.GN8.3XLARGE112")
    assert (t.cpu, t.memory, t.gpus, t.gpu_resource) == (14, "112Gi", 2, "nvidia.com/gpu")
    assert t.num_cpus == 14 and t.cpu_quantity == "14"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in t.tolerations


def test_cpu_types_have_no_gpus() -> None:
    catalog = default_catalog()
    cpu_types = [t for t in catalog.instance_types.values() if t.gpus == 0 and not t.local]
    assert len(cpu_types) >= 3


def test_case_slips_are_tolerated() -> None:
    assert default_catalog().instance_type("ml.gn8.3xlarge112").name == "ML.GN8.3XLARGE112"


def test_unknown_type_lists_valid_choices() -> None:
    with pytest.raises(CatalogError) as err:
        default_catalog().instance_type("ML.GN8.3XLARGE")
    assert err.value.reason == "InvalidSpec"
    assert err.value.field == "spec.instanceType"
    assert "did you mean 'ML.GN8.3XLARGE112'" in err.value.message
    assert "TI.S.LARGE.POST" in err.value.message
    assert "local" not in err.value.message.split("valid types:")[1]


@pytest.mark.parametrize("name", ["local", "local_gpu"])
def test_local_types_refused_in_cluster(name: str) -> None:
    catalog = default_catalog()
    with pytest.raises(CatalogError, match="local mode") as err:
        catalog.instance_type(name)
    assert err.value.reason == "InvalidSpec"
    assert catalog.instance_type(name, cluster=False).local


def test_local_gpu_has_a_gpu() -> None:
    assert default_catalog().instance_type("local_gpu", cluster=False).gpus == 1


@pytest.mark.parametrize(
    ("version", "gpu", "image"),
    [
        ("1.14.0", False, "tensorflow/tensorflow:1.14.0-py3"),
        ("1.14", True, "tensorflow/tensorflow:1.14.0-gpu-py3"),
        ("2.0.0", False, "tensorflow/tensorflow:2.0.0-py3"),
        ("2.0", True, "tensorflow/tensorflow:2.0.0-gpu-py3"),
        ("2.16", False, "tensorflow/tensorflow:2.16.1"),
        ("2.16.0", True, "tensorflow/tensorflow:2.16.1-gpu"),
    ],
)
def test_framework_images(version: str, gpu: bool, image: str) -> None:
    assert default_catalog().framework_image(version, gpu=gpu) == image


def test_unknown_framework_lists_versions() -> None:
    with pytest.raises(CatalogError) as err:
        default_catalog().framework_image("3.1", gpu=False)
    assert err.value.reason == "InvalidSpec"
    assert "1.14.0, 2.0.0, 2.16" in err.value.message
    assert "spec.image" in err.value.message


def test_custom_image_wins() -> None:
    catalog = default_catalog()
    assert catalog.training_image(image="me/tf:1", framework_version="9.9", gpu=True) == "me/tf:1"
    assert (
        catalog.training_image(image=None, framework_version="2.16", gpu=False)
        == "tensorflow/tensorflow:2.16.1"
    )


def test_toolkit_image() -> None:
    assert default_catalog().toolkit_image


def test_file_overlays_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "catalog.yaml"
    f.write_text(
        "instanceTypes:\n"
        "  GPU.A100:\n    cpu: 12\n    memory: 80Gi\n    gpus: 1\n    nodeSelector: {gpu: a100}\n"
        "  TI.S.LARGE.POST:\n    cpu: 3.5\n    memory: 7Gi\n"
        "frameworks:\n  '2.15':\n    cpu: my/tf:2.15\n    gpu: my/tf:2.15-gpu\n"
        "toolkitImage: my/toolkit:1\n"
    )
    # The path comes from the caller (the operator's settings, the SDK): the module reads no environment.
    monkeypatch.setenv(CATALOG_FILE_ENV, str(f))
    assert load_catalog() == default_catalog()
    catalog = load_catalog(f)
    assert catalog.instance_type("GPU.A100").node_selector == {"gpu": "a100"}
    large = catalog.instance_type("TI.S.LARGE.POST")
    assert (large.cpu_quantity, large.num_cpus) == ("3500m", 4)
    assert catalog.instance_type("ML.GN8.3XLARGE112").gpus == 2
    assert catalog.framework_image("2.15", gpu=True) == "my/tf:2.15-gpu"
    assert catalog.framework_image("1.14.0", gpu=False)
    assert catalog.toolkit_image == "my/toolkit:1"


def test_file_can_stand_alone(tmp_path: Path) -> None:
    f = tmp_path / "catalog.yaml"
    f.write_text(
        "inheritDefaults: false\ninstanceTypes:\n  only:\n    cpu: 1\n    memory: 1Gi\n"
        "frameworks: {}\ntoolkitImage: t:1\n"
    )
    catalog = load_catalog(f)
    assert list(catalog.instance_types) == ["only"]
    with pytest.raises(CatalogError):
        catalog.instance_type("ML.GN8.3XLARGE112")


def test_broken_file_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "catalog.yaml"
    f.write_text("instanceTypes:\n  bad:\n    cpu: -1\n    memory: lots\n")
    with pytest.raises(CatalogError, match="invalid catalog"):
        load_catalog(f)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
