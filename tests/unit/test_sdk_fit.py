"""fit(wait=False) against an injected Session: the TFTrainingJob it creates, and the uploaded source."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from tests.unit.sdk_support import COS, RecordingSession, write_source
from ti.api import TFTrainingJob
from ti.job import TrainingJob
from ti.tensorflow import TensorFlow

pytestmark = pytest.mark.unit


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_source(tmp_path)
    (tmp_path / "gpu" / "code" / "__pycache__").mkdir()
    (tmp_path / "gpu" / "code" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def estimator(session: RecordingSession, **extra: object) -> TensorFlow:
    return TensorFlow(
        role="default",
        train_instance_count=2,
        train_instance_type="ML.GN8.3XLARGE112",
        py_version="py3",
        script_mode=True,
        framework_version="1.14.0",
        entry_point="train.py",
        output_path=f"{COS}/path/",
        source_dir="gpu/code",
        session=session,
        **extra,  # type: ignore[arg-type]
    )


def test_fit_creates_the_job_the_seed_describes(project: Path) -> None:
    session = RecordingSession()
    est = estimator(
        session,
        hyperparameters={"epochs": 3, "lr": 0.01, "name": "mnist", "flag": True},
        distributions={"parameter_server": {"enabled": True}},
        metric_definitions=[{"Name": "accuracy", "Regex": "accuracy: ([0-9.]+)"}],
        train_max_run=3600,
        train_volume_size=50,
        checkpoint_path=f"{COS}/ckpt",
        base_job_name="mnist",
    )
    est.fit({"train": f"{COS}/data/train", "test": f"{COS}/data/test"}, wait=False)

    assert [c[0] for c in session.calls] == ["upload_file", "create_job"]
    body = session.calls[1][1]
    name = body["metadata"]["name"]
    assert re.fullmatch(r"mnist-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{3}", name)
    source = f"{COS}/path/{name}/source/sourcedir.tar.gz"
    assert session.calls[0][1] == source
    assert body == {
        "apiVersion": "training.ti.io/v1alpha1",
        "kind": "TFTrainingJob",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "labels": {},
            "annotations": {"training.ti.io/base-job-name": "mnist"},
        },
        "spec": {
            "role": "default",
            "instanceType": "ML.GN8.3XLARGE112",
            "instanceCount": 2,
            "frameworkVersion": "1.14.0",
            "pyVersion": "py3",
            "entryPoint": "train.py",
            "sourceDir": source,
            "hyperparameters": {"epochs": "3", "lr": "0.01", "name": "mnist", "flag": "true"},
            "inputs": {"train": f"{COS}/data/train", "test": f"{COS}/data/test"},
            "outputPath": f"{COS}/path",
            "checkpointPath": f"{COS}/ckpt",
            "distribution": {"type": "parameterServer", "parameterServerCount": 1},
            "env": [],
            "volumeSizeGB": 50,
            "maxRunSeconds": 3600,
            "metricDefinitions": [{"name": "accuracy", "regex": "accuracy: ([0-9.]+)"}],
            "runPolicy": body["spec"]["runPolicy"],
        },
    }
    TFTrainingJob.from_body(body)  # and it is a valid object
    with tarfile.open(fileobj=io.BytesIO(session.uploads[source])) as tar:
        assert sorted(tar.getnames()) == ["train.py", "util.py"]
    assert isinstance(est.latest_training_job, TrainingJob)
    assert est.latest_training_job.name == name
    assert est.model_data == f"{COS}/path/{name}/output/model.tar.gz"


def test_string_input_is_the_training_channel(project: Path) -> None:
    session = RecordingSession()
    estimator(session).fit(f"{COS}/path/to/training/data", wait=False, job_name="seed-job")
    body = session.jobs["seed-job"]
    assert body["spec"]["inputs"] == {"training": f"{COS}/path/to/training/data"}
    assert body["spec"]["distribution"] == {"type": "multiWorkerMirrored"}


def test_default_names_differ_between_fits(project: Path) -> None:
    session = RecordingSession()
    est = estimator(session)
    est.fit(f"{COS}/d", wait=False)
    first = est.latest_training_job.name
    est.fit(f"{COS}/d", wait=False)
    assert est.latest_training_job.name != first
    assert first.startswith("tensorflow-")


def test_attach_rebuilds_the_arguments(project: Path) -> None:
    session = RecordingSession()
    est = estimator(session, hyperparameters={"epochs": "3"}, base_job_name="mnist")
    est.fit(f"{COS}/d", wait=False, job_name="attach-me")
    again = TensorFlow.attach("attach-me", session=session, wait=False)
    expected = est.arguments()
    expected["source_dir"] = f"{COS}/path/attach-me/source/sourcedir.tar.gz"
    assert again.arguments() == expected
    assert again.latest_training_job.name == "attach-me"


def test_queue_name_puts_the_job_in_a_kueue_queue(project: Path) -> None:
    session = RecordingSession()
    estimator(session, queue_name="gpu-main").fit(f"{COS}/data", wait=False)
    body = session.calls[1][1]
    assert body["metadata"]["labels"] == {"kueue.x-k8s.io/queue-name": "gpu-main"}
    plain = RecordingSession()
    estimator(plain).fit(f"{COS}/data", wait=False)
    assert plain.calls[1][1]["metadata"]["labels"] == {}
