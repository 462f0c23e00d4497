"""Bad estimator and fit arguments: each fails on its own line, names the argument and the fix, and
creates nothing (no upload, no job)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.unit.sdk_support import COS, RecordingSession, seed_args, write_source
from ti._sdk.arguments import ArgumentError
from ti.api import TFTrainingJob, models
from ti.tensorflow import TensorFlow

pytestmark = pytest.mark.unit


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_source(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


CONSTRUCTION: list[tuple[dict[str, Any], str, str]] = [
    # (overrides, argument named, words the message must carry)
    ({"role": None}, "role", "role='default'"),
    ({"role": "TI_QCS_Role"}, "role", "ServiceAccount"),
    ({"train_instance_count": 0}, "train_instance_count", "from 1 to"),
    ({"train_instance_count": "2"}, "train_instance_count", "whole number"),
    ({"train_instance_type": "ML.GN8.3XLARGE"}, "train_instance_type", "Did you mean 'ML.GN8.3XLARGE112'"),
    ({"py_version": "py2"}, "py_version", "Python 2 is not supported"),
    ({"py_version": "py37"}, "py_version", "py_version='py3'"),
    ({"script_mode": False}, "script_mode", "only script mode"),
    ({"framework_version": "1.13"}, "framework_version", "no preset TensorFlow image"),
    ({"framework_version": None}, "framework_version", "neither framework_version nor image_name"),
    ({"entry_point": None}, "entry_point", "training script is required"),
    ({"entry_point": "missing.py"}, "entry_point", "is not in source_dir"),
    ({"entry_point": "../train.py"}, "entry_point", "inside source_dir"),
    ({"source_dir": "cpu/code"}, "source_dir", "is not a directory"),
    ({"output_path": None}, "output_path", "cos://"),
    ({"output_path": "bucket/path"}, "output_path", "has no scheme"),
    ({"output_path": "cos://bucket/path"}, "output_path", "<name>-<appid>"),
    ({"output_path": "file:///tmp/out"}, "output_path", "pods in the cluster cannot read"),
    ({"output_path": "ftp://host/x"}, "output_path", "unsupported scheme"),
    ({"hyperparameters": ["epochs", 3]}, "hyperparameters", "Pass a dict"),
    ({"hyperparameters": {"learning rate": 0.1}}, "hyperparameters", "not a valid option name"),
    ({"train_max_run": 0}, "train_max_run", "from 1 to"),
    ({"train_volume_size": -5}, "train_volume_size", "from 1 to"),
    ({"checkpoint_path": "file:///tmp/ckpt"}, "checkpoint_path", "pods in the cluster cannot read"),
    ({"distributions": {"mpi": {"enabled": True}}}, "distributions", "unsupported distribution 'mpi'"),
    (
        {
            "distributions": {
                "parameter_server": {"enabled": True},
                "multi_worker_mirrored_strategy": {"enabled": True},
            }
        },
        "distributions",
        "more than one",
    ),
    ({"distributions": {"parameter_server": {"enabled": True, "count": 0}}}, "distributions", "count 0"),
    ({"metric_definitions": [{"Name": "acc"}]}, "metric_definitions", "needs a 'Name' and a 'Regex'"),
    ({"metric_definitions": [{"Name": "acc", "Regex": "acc: [0-9.]+"}]}, "metric_definitions", "group"),
    ({"base_job_name": "My_Job"}, "base_job_name", "'my-job'"),
    ({"image_name": "has space"}, "image_name", "container image"),
    ({"queue_name": "GPU Queue"}, "queue_name", "LocalQueue"),
]


@pytest.mark.parametrize(
    ("overrides", "argument", "words"),
    CONSTRUCTION,
    ids=[c[1] + "-" + str(i) for i, c in enumerate(CONSTRUCTION)],
)
def test_bad_constructor_argument(
    project: Path, overrides: dict[str, Any], argument: str, words: str
) -> None:
    session = RecordingSession()
    with pytest.raises(ArgumentError) as caught:
        TensorFlow(session=session, **seed_args(**overrides))
    err = caught.value
    assert err.argument == argument
    assert str(err).startswith(f"{argument}: ")
    assert words in str(err)
    assert err.fix, "every error says what to do"
    assert session.calls == []


def test_every_constructor_error_is_its_own(project: Path) -> None:
    messages = set()
    for overrides, _, _ in CONSTRUCTION:
        with pytest.raises(ArgumentError) as caught:
            TensorFlow(session=RecordingSession(), **seed_args(**overrides))
        messages.add(str(caught.value))
    assert len(messages) == len(CONSTRUCTION)


FIT: list[tuple[dict[str, Any], str, str]] = [
    ({"inputs": "file:///data/train"}, "inputs['training']", "pods in the cluster cannot read"),
    ({"inputs": {"my-data": f"{COS}/x"}}, "inputs", "channel name 'my-data'"),
    ({"inputs": {"train": f"{COS}/a", "TRAIN": f"{COS}/b"}}, "inputs", "differ only in case"),
    ({"inputs": ["cos://a"]}, "inputs", "dict of channel name"),
    ({"inputs": "/data/train"}, "inputs['training']", "has no scheme"),
    ({"inputs": f"{COS}/x", "job_name": "My_Job"}, "job_name", "cannot name a training job"),
    ({"inputs": f"{COS}/x", "job_name": "j" * 51}, "job_name", "the limit is 50"),
]


@pytest.mark.parametrize(
    ("kwargs", "argument", "words"), FIT, ids=[f[1] + "-" + str(i) for i, f in enumerate(FIT)]
)
def test_bad_fit_argument_creates_nothing(
    project: Path, kwargs: dict[str, Any], argument: str, words: str
) -> None:
    session = RecordingSession()
    estimator = TensorFlow(session=session, **seed_args())
    with pytest.raises(ArgumentError) as caught:
        estimator.fit(wait=False, **kwargs)
    assert caught.value.argument == argument
    assert words in str(caught.value)
    assert session.calls == []
    assert estimator.latest_training_job is None


@pytest.mark.filterwarnings("ignore:framework_version")
def test_local_mode_takes_local_paths(project: Path) -> None:
    estimator = TensorFlow(
        session=RecordingSession(),
        **seed_args(train_instance_type="local", output_path="out", framework_version="2.16"),
    )
    assert estimator.local
    assert estimator.output_path == f"file://{project / 'out'}"


def test_framework_version_differing_from_local_tensorflow_warns(project: Path) -> None:
    with pytest.warns(UserWarning, match="framework_version='1.14.0'.*local mode trains with"):
        TensorFlow(session=RecordingSession(), **seed_args(train_instance_type="local", output_path="out"))


def test_seed_call_builds(project: Path) -> None:
    estimator = TensorFlow(session=RecordingSession(), **seed_args())
    assert estimator.training_image() == "tensorflow/tensorflow:1.14.0-gpu-py3"
    assert estimator.arguments()["source_dir"] == "gpu/code"


LIMITS: list[tuple[str, str, Any, Any]] = [
    # (SDK argument, spec field, the largest value the API model allows, one past it)
    ("train_instance_count", "instanceCount", models.MAX_INSTANCES, models.MAX_INSTANCES + 1),
    ("train_max_run", "maxRunSeconds", models.MAX_RUN_SECONDS, models.MAX_RUN_SECONDS + 1),
    ("train_volume_size", "volumeSizeGB", models.MAX_VOLUME_GB, models.MAX_VOLUME_GB + 1),
    (
        "hyperparameters",
        "hyperparameters",
        {f"h{i}": "x" * models.HYPERPARAMETER_VALUE_MAX_LENGTH for i in range(models.MAX_HYPERPARAMETERS)},
        {f"h{i}": "x" for i in range(models.MAX_HYPERPARAMETERS + 1)},
    ),
    (
        "hyperparameters",
        "hyperparameters",
        {"h": "x"},
        {"h": "x" * (models.HYPERPARAMETER_VALUE_MAX_LENGTH + 1)},
    ),
    ("role", "role", "a" * models.DNS_SUBDOMAIN_MAX_LENGTH, "a" * (models.DNS_SUBDOMAIN_MAX_LENGTH + 1)),
]


@pytest.mark.parametrize(
    ("argument", "field", "largest", "over"), LIMITS, ids=[f"{x[0]}-{i}" for i, x in enumerate(LIMITS)]
)
def test_the_sdks_limits_are_the_api_models(
    project: Path, argument: str, field: str, largest: Any, over: Any
) -> None:
    session = RecordingSession()
    estimator = TensorFlow(session=session, **seed_args(**{argument: largest}))
    estimator.fit(f"{COS}/data", wait=False, job_name="at-the-limit")
    TFTrainingJob.from_body(session.jobs["at-the-limit"])  # the API model takes what the SDK let through
    with pytest.raises(ArgumentError) as caught:
        TensorFlow(session=session, **seed_args(**{argument: over}))
    assert caught.value.argument == argument
    body = copy.deepcopy(session.jobs["at-the-limit"])
    body["spec"][field] = over
    with pytest.raises(ValueError):
        TFTrainingJob.from_body(body)  # and refuses what the SDK refuses


def test_parameter_server_count_is_the_models() -> None:
    TensorFlow(session=RecordingSession(), **seed_args(
        source_dir=None, entry_point=__file__,
        train_instance_count=2,
        distributions={"parameter_server": {"enabled": True, "count": models.MAX_PARAMETER_SERVERS}},
    ))  # fmt: skip
    with pytest.raises(ArgumentError, match=f"from 1 to {models.MAX_PARAMETER_SERVERS}"):
        TensorFlow(session=RecordingSession(), **seed_args(
            source_dir=None, entry_point=__file__,
            distributions={"parameter_server": {"enabled": True, "count": models.MAX_PARAMETER_SERVERS + 1}},
        ))  # fmt: skip
