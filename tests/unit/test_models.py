from __future__ import annotations

import pytest
from pydantic import ValidationError

from ti.api import (
    CleanPodPolicy,
    ConditionType,
    DistributionType,
    Phase,
    TFTrainingJob,
    TFTrainingJobSpec,
    TFTrainingJobStatus,
    status_body,
)
from ti.api.models import CLUSTER_URI_PATTERN, URI_PATTERN

from .jobs import body, job

pytestmark = pytest.mark.unit


def test_defaults_follow_the_seed() -> None:
    spec = job().spec
    assert spec.instance_count == 1
    assert spec.py_version == "py3"
    assert spec.max_run_seconds == 86400
    assert spec.volume_size_gb == 30
    assert spec.distribution.type is DistributionType.MULTI_WORKER_MIRRORED
    assert spec.distribution.ps_count == 0
    assert spec.run_policy.backoff_limit == 3
    assert spec.run_policy.clean_pod_policy is CleanPodPolicy.RUNNING
    assert spec.run_policy.stop is False and spec.run_policy.suspend is False
    assert not spec.distributed


def test_camel_case_on_the_wire_and_round_trip() -> None:
    b = body(volumeSizeGB=50, runPolicy={"backoffLimit": 1, "ttlSecondsAfterFinished": 60})
    j = TFTrainingJob.from_body(b)
    out = j.to_body()
    assert out["spec"]["volumeSizeGB"] == 50
    assert out["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 60
    assert out["spec"]["instanceType"] == "TI.S.LARGE.POST"
    assert "status" not in out
    assert TFTrainingJob.from_body(out) == j


def test_python_names_are_accepted_too() -> None:
    spec = TFTrainingJobSpec(
        instance_type="TI.S.LARGE.POST",
        framework_version="1.14.0",
        entry_point="train.py",
        output_path="cos://bucket-1250000000/out",
    )
    assert spec.model_dump(by_alias=True)["frameworkVersion"] == "1.14.0"


def test_metadata_extras_survive() -> None:
    b = body()
    b["metadata"]["labels"] = {"team": "a"}
    b["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    out = TFTrainingJob.from_body(b).to_body()
    assert out["metadata"]["labels"] == {"team": "a"}
    assert out["metadata"]["managedFields"] == [{"manager": "kubectl"}]


def test_status_round_trip_with_times() -> None:
    st = {
        "phase": "Training",
        "conditions": [
            {
                "type": "Created",
                "status": "True",
                "reason": "PodsCreated",
                "lastTransitionTime": "2024-05-01T12:00:00Z",
            }
        ],
        "startTime": "2024-05-01T12:00:05Z",
        "instances": [{"name": "mnist-worker-0", "role": "worker", "index": 0, "phase": "Training"}],
        "restartCount": 1,
        "unknownFutureField": 1,
    }
    j = job(status=st)
    assert j.status is not None and j.status.phase is Phase.TRAINING
    assert j.status.condition(ConditionType.CREATED) is not None
    out = status_body(j.status)
    assert out["conditions"][0]["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert out["startTime"] == "2024-05-01T12:00:05Z"
    assert "unknownFutureField" not in out
    assert "failureReason" not in out


def test_status_defaults_empty() -> None:
    assert status_body(TFTrainingJobStatus()) == {
        "conditions": [],
        "instances": [],
        "restartCount": 0,
        "metrics": {},
    }


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"instanceCount": 0}, "instanceCount"),
        ({"instanceCount": 1001}, "instanceCount"),
        ({"inputs": {"1train": "cos://b-1/x"}}, "channel name"),
        ({"inputs": {"tr-ain": "cos://b-1/x"}}, "channel name"),
        ({"inputs": {"train": "cos://b-1/x", "TRAIN": "cos://b-1/y"}}, "case"),
        ({"inputs": {"train": "http://b-1/x"}}, "inputs.train"),
        ({"outputPath": "/tmp/out"}, "outputPath"),
        ({"outputPath": "cos://UPPER/out"}, "outputPath"),
        ({"frameworkVersion": None, "image": None}, "frameworkVersion"),
        ({"frameworkVersion": "two"}, "frameworkVersion"),
        ({"pyVersion": "py2"}, "pyVersion"),
        ({"entryPoint": "../escape.py"}, "entryPoint"),
        ({"entryPoint": "/abs/train.py"}, "entryPoint"),
        ({"env": [{"name": "TM_HOSTS", "value": "x"}]}, "TM_"),
        ({"env": [{"name": "TF_CONFIG", "value": "x"}]}, "TF_CONFIG"),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "unique"),
        ({"env": [{"name": "1A"}]}, "env"),
        ({"hyperparameters": {"lr": 0.1}}, "hyperparameters"),
        ({"hyperparameters": {"bad key": "1"}}, "hyperparameter name"),
        (
            {"distribution": {"type": "multiWorkerMirrored", "parameterServerCount": 2}},
            "parameterServerCount",
        ),
        ({"distribution": {"type": "horovod"}}, "distribution"),
        ({"runPolicy": {"cleanPodPolicy": "Some"}}, "cleanPodPolicy"),
        ({"runPolicy": {"backoffLimit": -1}}, "backoffLimit"),
        ({"metricDefinitions": [{"name": "loss", "regex": "loss=[0-9.]+"}]}, "group"),
        ({"metricDefinitions": [{"name": "loss", "regex": "loss=([0-9.]+"}]}, "regular expression"),
        ({"volumeSizeGB": 0}, "volumeSizeGB"),
        ({"maxRunSeconds": 0}, "maxRunSeconds"),
        ({"storageSecretRef": {"name": "Not_A_Name"}}, "storageSecretRef"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_invalid_specs_say_which_field(change: dict, needle: str) -> None:
    b = body()
    for key, value in change.items():
        if value is None:
            b["spec"].pop(key, None)
        else:
            b["spec"][key] = value
    with pytest.raises(ValidationError) as err:
        TFTrainingJob.from_body(b)
    assert needle in str(err.value)


@pytest.mark.parametrize("name", ["Mnist", "1mnist", "a" * 51, "mnist_job", "mnist-"])
def test_job_names_fit_host_names(name: str) -> None:
    b = body()
    b["metadata"]["name"] = name
    with pytest.raises(ValidationError):
        TFTrainingJob.from_body(b)


def test_custom_image_without_framework_version() -> None:
    b = body(image="registry.example.com/me/tf:latest")
    b["spec"].pop("frameworkVersion")
    assert TFTrainingJob.from_body(b).spec.image == "registry.example.com/me/tf:latest"


def test_parameter_server_count_defaults_to_one() -> None:
    spec = job(distribution={"type": "parameterServer"}).spec
    assert spec.ps_count == 1 and spec.distributed
    assert job(distribution={"type": "parameterServer", "parameterServerCount": 3}).spec.ps_count == 3


@pytest.mark.parametrize(
    ("uri", "model_ok", "cluster_ok"),
    [
        ("cos://bucket-1250000000/prefix/data", True, True),
        ("cos://bucket-1250000000", True, True),
        ("s3://my.bucket/x", True, True),
        ("file:///home/me/data", True, False),
        ("file://relative", False, False),
        ("http://bucket/x", False, False),
        ("cos://", False, False),
    ],
)
def test_uri_patterns(uri: str, model_ok: bool, cluster_ok: bool) -> None:
    import re

    assert bool(re.match(URI_PATTERN, uri)) is model_ok
    assert bool(re.match(CLUSTER_URI_PATTERN, uri)) is cluster_ok


def test_stop_is_a_plain_boolean_patch() -> None:
    b = body(runPolicy={"stop": True})
    assert TFTrainingJob.from_body(b).spec.run_policy.stop is True


def test_phase_finished() -> None:
    assert {p for p in Phase if p.finished} == {Phase.COMPLETED, Phase.FAILED, Phase.STOPPED}
