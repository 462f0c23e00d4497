"""The TI container contract end to end: the renderer's pods run as local processes (ti.local),
against the loopback COS server, training real TensorFlow on data made here."""

from __future__ import annotations

import io
import json
import runpy
import tarfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ti import contract
from ti.api import TFTrainingJob
from ti.catalog import default_catalog
from ti.local.runner import InstanceResult, run_pods
from ti.operator.render import render
from ti.operator.settings import OperatorConfig
from ti.storage import CosSettings, CosStore, pack_dir

from ..support.objectstore import LoopbackObjectStore

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"
METRICS = [{"name": "loss", "regex": r"loss=([0-9.]+)"}, {"name": "accuracy", "regex": r"accuracy=([0-9.]+)"}]

# Records what the contract gave the script, then runs the example unchanged.
RECORDER = """
import json, os, runpy, sys
config = os.environ["TM_INPUT_CONFIG_DIR"]
record = {
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "env": {k: v for k, v in os.environ.items() if k.startswith("TM_") or k == "TF_CONFIG"},
    "secrets": sorted(k for k in os.environ if k.startswith("TENCENTCLOUD_")),
    "config": {n: json.load(open(os.path.join(config, n))) for n in sorted(os.listdir(config))},
    "channel_files": {c: sorted(os.listdir(os.environ["TM_CHANNEL_" + c.upper()])) for c in ("train", "test")},
}
os.makedirs(os.environ["TM_OUTPUT_DATA_DIR"], exist_ok=True)
with open(os.path.join(os.environ["TM_OUTPUT_DATA_DIR"], "contract.json"), "w") as f:
    json.dump(record, f)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, instance: str, line: str) -> None:
        with self._lock:
            self.lines.append((instance, line))

    def of(self, instance: str) -> str:
        return "\n".join(line for name, line in self.lines if name == instance)

    def __str__(self) -> str:
        return "\n".join(f"[{name}] {line}" for name, line in self.lines[-200:])


@pytest.fixture
def cos(object_store: LoopbackObjectStore) -> CosStore:
    return CosStore(CosSettings.from_env(object_store.env()))


def upload_source(cos: CosStore, bucket: str, files: dict[str, str], tmp_path: Path, name: str) -> str:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    for filename, text in files.items():
        (src / filename).write_text(text)
    archive = tmp_path / f"{name}.tar.gz"
    pack_dir(src, archive)
    uri = f"cos://{bucket}/code/{name}/sourcedir.tar.gz"
    cos.upload_file(archive, uri)
    return uri


def upload_data(cos: CosStore, bucket: str, tmp_path: Path) -> dict[str, str]:
    runpy.run_path(str(EXAMPLES / "make_data.py"))["write"](tmp_path / "data", 1024, 256)
    for path in sorted((tmp_path / "data").rglob("*.npz")):
        cos.upload_file(path, f"cos://{bucket}/data/{path.relative_to(tmp_path / 'data').as_posix()}")
    return {"train": f"cos://{bucket}/data/train", "test": f"cos://{bucket}/data/test"}


def make_job(name: str, **spec: Any) -> TFTrainingJob:
    return TFTrainingJob.from_body(
        {
            "apiVersion": "training.ti.io/v1alpha1",
            "kind": "TFTrainingJob",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"role": "default", "instanceType": "local", "frameworkVersion": "2.16", **spec},
        }
    )


def run_job(
    object_store: LoopbackObjectStore, job: TFTrainingJob, work: Path, lines: Lines, attempt: int = 0
) -> list[InstanceResult]:
    config = OperatorConfig(cos_region=object_store.region, cos_endpoint=object_store.endpoint)
    pods = render(job, default_catalog(), config, attempt, cluster=False).pods
    return run_pods(pods, work, storage_env=object_store.env(), on_output=lines, timeout=300)


def untar(cos: CosStore, uri: str, dest: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(cos.get_bytes(uri))) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.mark.training
def test_single_instance_keras_job(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path
) -> None:
    train_py = (EXAMPLES / "keras-single" / "train.py").read_text()
    source = upload_source(cos, bucket, {"train.py": train_py, "entry.py": RECORDER}, tmp_path, "single")
    inputs = upload_data(cos, bucket, tmp_path)
    hyperparameters = {"epochs": "2", "batch_size": "32", "learning_rate": "0.02"}
    spec = {
        "entryPoint": "entry.py",
        "sourceDir": source,
        "hyperparameters": hyperparameters,
        "inputs": inputs,
        "outputPath": f"cos://{bucket}/out",
        "checkpointPath": f"cos://{bucket}/checkpoints/keras-single",
        "metricDefinitions": METRICS,
    }
    lines = Lines()
    work = tmp_path / "work"
    [result] = run_job(object_store, make_job("keras-single", **spec), work, lines)
    assert result.exit_code == 0, f"{result.failure_reason}\n{lines}"
    assert result.name == "keras-single-worker-0" and result.failure_reason is None
    assert set(result.metrics) == {"loss", "accuracy"} and 0 <= result.metrics["accuracy"] <= 1

    prefix = f"cos://{bucket}/out/keras-single"
    assert f"out/keras-single/logs/{result.name}.log" in object_store.keys(bucket, "out/")
    assert "epoch 2: loss=" in cos.get_bytes(f"{prefix}/logs/{result.name}.log").decode()

    # The contract as the script saw it.
    record = json.loads(
        (untar(cos, f"{prefix}/output/output.tar.gz", tmp_path / "output") / "contract.json").read_text()
    )
    root = work / result.name
    assert record["argv"] == ["--batch_size", "32", "--epochs", "2", "--learning_rate", "0.02"]
    assert record["cwd"] == str(root / "code")
    assert record["secrets"] == []
    assert record["config"]["hyperparameters.json"] == hyperparameters
    assert set(record["config"]["inputdataconfig.json"]) == {"train", "test"}
    assert record["config"]["resourceconfig.json"]["current_host"] == result.name
    assert record["channel_files"] == {
        "train": ["part-00000.npz", "part-00001.npz"],
        "test": ["part-00000.npz"],
    }
    env = record["env"]
    assert json.loads(env.pop("TM_HPS")) == hyperparameters
    assert json.loads(env.pop("TM_CHANNELS")) == ["test", "train"]
    assert json.loads(env.pop("TM_HOSTS")) == [result.name]
    assert env == {
        "TM_MODEL_DIR": f"{root}/model",
        "TM_OUTPUT_DATA_DIR": f"{root}/output/data",
        "TM_INPUT_CONFIG_DIR": f"{root}/input/config",
        "TM_CHANNEL_TRAIN": f"{root}/input/data/train",
        "TM_CHANNEL_TEST": f"{root}/input/data/test",
        "TM_CHECKPOINT_DIR": f"{root}/checkpoints",
        "TM_NUM_GPUS": "0",
        "TM_NUM_CPUS": "1",
        "TM_CURRENT_HOST": result.name,
    }

    # model.tar.gz holds a SavedModel that serves, and the Keras model.
    import keras
    import tensorflow as tf

    model_dir = untar(cos, f"{prefix}/output/model.tar.gz", tmp_path / "model")
    assert (model_dir / "1" / "saved_model.pb").is_file()
    test = np.load(tmp_path / "data" / "test" / "part-00000.npz")
    loaded = tf.saved_model.load(str(model_dir / "1"))  # kept: its functions reference its variables
    served = loaded.serve(tf.constant(test["x"][:8]))
    assert served.shape == (8, 4)
    reloaded = keras.saving.load_model(model_dir / "model.keras")
    accuracy = float(np.mean(np.argmax(reloaded.predict(test["x"], verbose=0), axis=1) == test["y"]))
    assert accuracy > 0.5

    # A retried attempt restores the checkpoints and resumes instead of starting over.
    assert any(k.endswith(".index") for k in object_store.keys(bucket, "checkpoints/keras-single/"))
    again = Lines()
    retried = make_job("keras-single", **{**spec, "hyperparameters": {**hyperparameters, "epochs": "3"}})
    [second] = run_job(object_store, retried, tmp_path / "work-2", again, attempt=1)
    assert second.exit_code == 0, f"{second.failure_reason}\n{again}"
    log = again.of(second.name)
    assert "resumed from" in log and "at epoch 2" in log
    assert "epoch 3: loss=" in log and "epoch 1: loss=" not in log


@pytest.mark.training
def test_two_workers_train_one_model(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path
) -> None:
    train_py = (EXAMPLES / "keras-two-workers" / "train.py").read_text()
    source = upload_source(cos, bucket, {"train.py": train_py}, tmp_path, "two")
    inputs = upload_data(cos, bucket, tmp_path)
    job = make_job(
        "keras-two",
        instanceCount=2,
        entryPoint="train.py",
        sourceDir=source,
        hyperparameters={"epochs": "2", "batch_size": "32"},
        inputs={"train": inputs["train"]},
        outputPath=f"cos://{bucket}/out",
        distribution={"type": "multiWorkerMirrored"},
    )
    lines = Lines()
    results = run_job(object_store, job, tmp_path / "work", lines)
    assert [r.exit_code for r in results] == [0, 0], f"{[r.failure_reason for r in results]}\n{lines}"
    chief, other = results
    assert "2 replicas in sync; chief: True" in lines.of(chief.name)
    assert "2 replicas in sync; chief: False" in lines.of(other.name)
    keys = object_store.keys(bucket, "out/keras-two/")
    assert sorted(k for k in keys if "/logs/" in k) == [f"out/keras-two/logs/{r.name}.log" for r in results]
    assert keys.count("out/keras-two/output/model.tar.gz") == 1
    model_dir = untar(cos, f"cos://{bucket}/out/keras-two/output/model.tar.gz", tmp_path / "model")
    assert (model_dir / "1" / "saved_model.pb").is_file()


FAILING = "def train():\n    raise RuntimeError('out of patience: loss is NaN at step 7')\n\ntrain()\n"
SELF_REPORTING = (
    "import os, sys\n"
    "failure = os.path.join(os.path.dirname(os.environ['TM_OUTPUT_DATA_DIR']), 'failure')\n"
    "open(failure, 'w').write('channel train has no rows with label 3')\n"
    "raise RuntimeError('generic error the user did not want shown')\n"
)


@pytest.mark.parametrize(
    ("script", "reason", "absent"),
    [
        (FAILING, "RuntimeError: out of patience: loss is NaN at step 7", None),
        (SELF_REPORTING, "channel train has no rows with label 3", "generic error"),
    ],
    ids=["raises", "writes-failure-file"],
)
def test_a_failing_script_reports_why(
    object_store: LoopbackObjectStore,
    bucket: str,
    cos: CosStore,
    tmp_path: Path,
    script: str,
    reason: str,
    absent: str | None,
) -> None:
    source = upload_source(cos, bucket, {"train.py": script}, tmp_path, "failing")
    cos.put_bytes(b"1,2\n", f"cos://{bucket}/data/rows.csv")
    job = make_job(
        "failing",
        entryPoint="train.py",
        sourceDir=source,
        inputs={"train": f"cos://{bucket}/data/rows.csv"},
        outputPath=f"cos://{bucket}/out",
    )
    lines = Lines()
    [result] = run_job(object_store, job, tmp_path / "work", lines)
    assert result.exit_code == 1 and result.main_exit_code == 1 and result.upload_exit_code == 1, str(lines)
    assert result.failure_reason is not None and reason in result.failure_reason
    # The launcher copies the reason to the main container's termination-message file, which the
    # kubelet reads (local mode points it into the work directory); the script's own file wins there too.
    term = (result.work_dir / ".ti" / f"{contract.MAIN_CONTAINER}.termination-log").read_text()
    assert reason in term
    if absent:
        assert absent not in result.failure_reason and absent not in term
    keys = object_store.keys(bucket, "out/failing/")
    assert "out/failing/logs/failing-worker-0.log" in keys
    assert "out/failing/output/model.tar.gz" not in keys


def test_a_missing_channel_fails_the_fetch_step(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path
) -> None:
    source = upload_source(cos, bucket, {"train.py": "print('never runs')\n"}, tmp_path, "nochannel")
    job = make_job(
        "no-channel",
        entryPoint="train.py",
        sourceDir=source,
        inputs={"train": f"cos://{bucket}/data/not-there"},
        outputPath=f"cos://{bucket}/out",
    )
    lines = Lines()
    [result] = run_job(object_store, job, tmp_path / "work", lines)
    assert result.fetch_exit_code == contract.DOWNLOAD_FAILED_EXIT_CODE and result.main_exit_code is None
    assert result.failure_reason is not None
    assert (
        "channel 'train'" in result.failure_reason
        and f"cos://{bucket}/data/not-there" in result.failure_reason
    )
    assert "never runs" not in str(lines)


def test_local_mode_with_file_uris_needs_no_object_store(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "import os, sys\n"
        "rows = open(os.path.join(os.environ['TM_CHANNEL_TRAIN'], 'rows.csv')).read()\n"
        "open(os.path.join(os.environ['TM_MODEL_DIR'], 'model.txt'), 'w').write(rows.upper())\n"
        "print('metric loss=0.125', sys.argv[1:])\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("a,b\n")
    job = make_job(
        "file-job",
        entryPoint="train.py",
        sourceDir=f"file://{code}",
        inputs={"train": f"file://{tmp_path / 'data'}"},
        outputPath=f"file://{tmp_path / 'out'}",
        hyperparameters={"lr": "0.5"},
        metricDefinitions=[{"name": "loss", "regex": r"loss=([0-9.]+)"}],
    )
    lines = Lines()
    pods = render(job, default_catalog(), OperatorConfig(), cluster=False).pods
    [result] = run_pods(pods, tmp_path / "work", on_output=lines)
    assert result.exit_code == 0, f"{result.failure_reason}\n{lines}"
    assert result.metrics == {"loss": 0.125}
    assert "metric loss=0.125 ['--lr', '0.5']" in lines.of("file-job-worker-0")
    with tarfile.open(tmp_path / "out" / "file-job" / "output" / "model.tar.gz") as tar:
        model = tar.extractfile("model.txt")
        assert model is not None and model.read() == b"A,B\n"
    assert (tmp_path / "out" / "file-job" / "logs" / "file-job-worker-0.log").is_file()
