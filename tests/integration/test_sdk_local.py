"""Local mode: the TI document's code with train_instance_type='local' trains real TensorFlow here, as processes.

The same TFTrainingJob is built and rendered as for a cluster; ti.local runs its pods' containers
(fetch → the script → upload) with file:// inputs and output.
"""

from __future__ import annotations

import io
import json
import runpy
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ti.job import TrainingJobFailed, TrainingJobStopped
from ti.tensorflow import TensorFlow

pytestmark = [
    pytest.mark.integration,
    pytest.mark.training,
    # This machine runs a newer TensorFlow than the preset images; the version test checks the warning.
    pytest.mark.filterwarnings("ignore:framework_version=.*local mode trains with:UserWarning"),
]
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

TRAIN_PY = """
import argparse, json, os

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args, _ = parser.parse_known_args()
    data = np.load(os.path.join(os.environ["TM_CHANNEL_TRAINING"], "data.npz"))
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.1), loss="mse")
    history = model.fit(data["x"], data["y"], epochs=args.epochs, verbose=0)
    print(f"epochs={args.epochs} loss={history.history['loss'][-1]:.4f}")
    model.save(os.path.join(os.environ["TM_MODEL_DIR"], "model.keras"))
    with open(os.path.join(os.environ["TM_OUTPUT_DATA_DIR"], "history.json"), "w") as f:
        json.dump(history.history, f)


if __name__ == "__main__":
    main()
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder: gpu/code/train.py as in the TI document, and data made here."""
    code = tmp_path / "gpu" / "code"
    code.mkdir(parents=True)
    (code / "train.py").write_text(TRAIN_PY)
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "stale.pyc").write_bytes(b"\0")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "data.npz", x=x, y=x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TI_LOCAL_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return tmp_path


def members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


def test_the_seed_snippet_in_local_mode(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    role = "default"
    output = f"file://{project}/output"
    with pytest.warns(UserWarning, match="framework_version='1.14.0'.*local mode trains with"):
        tf_estimator = TensorFlow(
            role=role,
            train_instance_count=1,
            train_instance_type="local",
            py_version="py3",
            script_mode=True,
            framework_version="1.14.0",
            entry_point="train.py",
            output_path=output,
            source_dir="gpu/code",
            hyperparameters={"epochs": 3},
        )
    tf_estimator.fit(f"file://{project}/data")

    name = tf_estimator.latest_training_job.name
    job_dir = project / "output" / name
    assert tf_estimator.model_data == f"{output}/{name}/output/model.tar.gz"
    assert members(job_dir / "output" / "model.tar.gz") == ["model.keras"]
    assert members(job_dir / "output" / "output.tar.gz") == ["history.json"]
    assert members(job_dir / "source" / "sourcedir.tar.gz") == ["train.py"]
    with tarfile.open(job_dir / "output" / "output.tar.gz") as tar:
        history = json.load(io.TextIOWrapper(tar.extractfile("history.json")))  # type: ignore[arg-type]
    assert len(history["loss"]) == 3
    out = capsys.readouterr().out
    assert "[worker-0] epochs=3 loss=" in out
    assert f"training job {name}: Completed" in out
    status = tf_estimator.latest_training_job.describe()["status"]
    assert status["phase"] == "Completed"
    assert status["modelArtifacts"] == tf_estimator.model_data


def test_a_failing_script_makes_fit_raise_with_its_message(project: Path) -> None:
    (project / "gpu" / "code" / "train.py").write_text(
        "def main():\n    raise ValueError('labels are missing from the training channel')\n\nmain()\n"
    )
    estimator = TensorFlow(
        role="default",
        train_instance_count=1,
        train_instance_type="local",
        framework_version="2.16",
        entry_point="train.py",
        source_dir="gpu/code",
        output_path=str(project / "output"),
    )
    with pytest.raises(TrainingJobFailed) as caught:
        estimator.fit(f"file://{project}/data")
    err = caught.value
    assert err.reason == "TrainingFailed"
    assert "ValueError: labels are missing from the training channel" in (err.failure_reason or "")
    assert "ValueError: labels are missing from the training channel" in str(err)
    assert not (project / "output" / estimator.latest_training_job.name / "output" / "model.tar.gz").exists()

    # fit(wait=False) returns at once; waiting later raises the same way.
    estimator.fit(f"file://{project}/data", wait=False)
    with pytest.raises(TrainingJobFailed, match="labels are missing from the training channel"):
        estimator.latest_training_job.wait(out=io.StringIO())
    assert estimator.latest_training_job.describe()["status"]["phase"] == "Failed"


def test_two_local_instances_train_one_model(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "make_data.py"))["write"](project / "cluster-data", 512, 128)
    shutil.copytree(EXAMPLES / "keras-two-workers", project / "two")
    estimator = TensorFlow(
        role="default",
        train_instance_count=2,
        train_instance_type="local",
        framework_version="2.16",
        entry_point="train.py",
        source_dir="two",
        output_path=f"file://{project}/output",
        hyperparameters={"epochs": 2},
        distributions={"multi_worker_mirrored_strategy": {"enabled": True}},
    )
    estimator.fit({"train": f"file://{project}/cluster-data/train"})

    name = estimator.latest_training_job.name
    model = project / "output" / name / "output" / "model.tar.gz"
    assert any(m.startswith("1/") for m in members(model)), "the chief's SavedModel"
    out = capsys.readouterr().out
    assert "[worker-0] " in out and "[worker-1] " in out
    status = estimator.latest_training_job.describe()["status"]
    assert [i["phase"] for i in status["instances"]] == ["Succeeded", "Succeeded"]
    # Each instance logged under its own prefix, and both trained in one two-worker cluster.
    assert "[worker-0] 2 replicas in sync; chief: True" in out
    assert "[worker-1] 2 replicas in sync; chief: False" in out
    assert (project / "work" / name / f"{name}-worker-1").is_dir()


def test_ti_run_a_manifest_locally(project: Path) -> None:
    manifest = {
        "apiVersion": "training.ti.io/v1alpha1",
        "kind": "TFTrainingJob",
        "metadata": {"name": "from-yaml"},
        "spec": {
            "instanceType": "TI.S.MEDIUM.POST",
            "frameworkVersion": "2.16",
            "entryPoint": "train.py",
            "sourceDir": f"file://{project}/gpu/code",
            "hyperparameters": {"epochs": "1"},
            "inputs": {"training": f"file://{project}/data"},
            "outputPath": f"file://{project}/output",
        },
    }
    (project / "job.yaml").write_text(yaml.safe_dump(manifest))
    ti = str(Path(sys.executable).parent / "ti")
    done = subprocess.run(
        [ti, "run", "-f", "job.yaml", "--local"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[worker-0] epochs=1 loss=" in done.stdout
    assert f"model: file://{project}/output/from-yaml/output/model.tar.gz" in done.stdout
    assert members(project / "output" / "from-yaml" / "output" / "model.tar.gz") == ["model.keras"]

    (project / "gpu" / "code" / "train.py").write_text("import sys\nsys.exit('no GPU found')\n")
    manifest["metadata"]["name"] = "failing-yaml"
    (project / "job.yaml").write_text(yaml.safe_dump(manifest))
    failed = subprocess.run(
        [ti, "run", "-f", "job.yaml", "--local"], capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 1
    assert "no GPU found" in failed.stderr

    (project / "bad.yaml").write_text("kind: TFTrainingJob\nspec: {}\n")
    bad = subprocess.run([ti, "run", "-f", "bad.yaml", "--local"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "not a valid TFTrainingJob" in bad.stderr


def test_run_tensorboard_locally_serves_the_jobs_event_files(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "gpu" / "code" / "train.py").write_text(
        "import os\n"
        "import tensorflow as tf\n"
        "writer = tf.summary.create_file_writer(os.path.join(os.environ['TM_OUTPUT_DATA_DIR'], 'tb'))\n"
        "with writer.as_default():\n"
        "    for step in range(3):\n"
        "        tf.summary.scalar('loss', 1.0 / (step + 1), step=step)\n"
        "writer.flush()\n"
    )
    estimator = TensorFlow(
        role="default",
        train_instance_count=1,
        train_instance_type="local",
        framework_version="2.16",
        entry_point="train.py",
        source_dir="gpu/code",
        output_path=str(project / "output"),
    )
    estimator.fit(f"file://{project}/data", run_tensorboard_locally=True)
    board = estimator.latest_training_job.board
    try:
        assert board.wait_ready(120), "TensorBoard never answered"
        assert f"TensorBoard at {board.url}" in capsys.readouterr().out

        def runs() -> dict[str, Any]:
            # TensorBoard rescans its logdir every few seconds.
            with urllib.request.urlopen(f"{board.url}data/plugin/scalars/tags", timeout=30) as response:
                tags: dict[str, Any] = json.load(response)
            return {run: tag for run, tag in tags.items() if run.endswith("tb")}

        deadline = time.monotonic() + 60
        while not runs() and time.monotonic() < deadline:
            time.sleep(1)
        ((run, tags),) = runs().items()
        assert "loss" in tags, run
    finally:
        board.stop()
    assert not board.running()


ENDINGS_PY = """
import os, signal, sys, time

mode = sys.argv[sys.argv.index("--mode") + 1]
marker = sys.argv[sys.argv.index("--marker") + 1]
print("attempt starts", flush=True)
if mode == "killed-once" and not os.path.exists(marker):
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does: exit code 137
if mode == "sleep":
    time.sleep(120)
"""


def endings_estimator(project: Path, mode: str, **extra: Any) -> TensorFlow:
    (project / "gpu" / "code" / "train.py").write_text(ENDINGS_PY)
    return TensorFlow(
        role="default",
        train_instance_count=1,
        train_instance_type="local",
        framework_version="2.16",
        entry_point="train.py",
        source_dir="gpu/code",
        output_path=str(project / "output"),
        hyperparameters={"mode": mode, "marker": str(project / "killed")},
        **extra,
    )


def test_a_killed_script_is_retried_as_in_a_cluster(project: Path) -> None:
    estimator = endings_estimator(project, "killed-once")
    out = io.StringIO()
    estimator.fit(None, wait=False)
    estimator.latest_training_job.wait(out=out)
    status = estimator.latest_training_job.describe()["status"]
    assert (status["phase"], status["restartCount"]) == ("Completed", 1)
    assert "restarting all instances (attempt 1 of runPolicy.backoffLimit 3)" in out.getvalue()
    assert "the training script was killed (exit code 137" in out.getvalue()
    assert out.getvalue().count("[worker-0] attempt starts") == 2
    assert [c["type"] for c in status["conditions"] if c["type"] == "Restarting"] == ["Restarting"]


def test_train_max_run_ends_the_job_with_max_run_exceeded(project: Path) -> None:
    estimator = endings_estimator(project, "sleep", train_max_run=3)
    started = time.monotonic()
    with pytest.raises(TrainingJobFailed) as caught:
        estimator.fit(None, logs=False)
    assert caught.value.reason == "MaxRunExceeded"
    assert "spec.maxRunSeconds (3s)" in (caught.value.failure_reason or "")
    assert time.monotonic() - started < 60
    assert estimator.latest_training_job.describe()["status"]["phase"] == "Failed"


def test_stop_ends_the_processes_and_the_job_is_stopped(project: Path) -> None:
    estimator = endings_estimator(project, "sleep")
    estimator.fit(None, wait=False)
    job = estimator.latest_training_job
    deadline = time.monotonic() + 60
    while job.phase != "Training" and time.monotonic() < deadline:
        time.sleep(0.2)
    body = job.stop(wait=True)
    assert (body["status"]["phase"], body["status"]["reason"]) == ("Stopped", "Stopped")
    assert body["spec"]["runPolicy"]["stop"] is True
    with pytest.raises(TrainingJobStopped):
        job.wait(out=io.StringIO())
    left = subprocess.run(["pgrep", "-f", str(project / "work")], capture_output=True, text=True)
    assert left.stdout == "", "a process of the stopped job is still running"
