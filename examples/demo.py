"""`make demo`: train the example Keras model with the TI SDK in local mode (no cluster, no Docker).

It is the TI document's own call, with `train_instance_type='local'` and file:// locations:
the SDK packs examples/keras-single, builds the TFTrainingJob a cluster would get, renders its pod and
runs that pod's steps here as processes (fetch the data, run train.py, upload model.tar.gz).

    python examples/demo.py            # data, training, where the model is and its test accuracy
    python examples/demo.py --compare  # also run train.py directly with python, and print the overhead
"""

from __future__ import annotations

import argparse
import os
import runpy
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("TI_DEMO_DIR", HERE.parent / ".ti-work" / "demo"))
HYPERPARAMETERS = {"epochs": 5, "batch_size": 64}


def train_with_the_sdk(data: Path) -> tuple[str, dict[str, float], float]:
    from ti.tensorflow import TensorFlow
    from ti.tensorflow.estimator import local_tensorflow_version

    # Local mode runs this machine's TensorFlow whatever the preset version says; we know.
    warnings.filterwarnings("ignore", message="framework_version=", category=UserWarning)
    print(f"Local mode trains with this machine's TensorFlow {local_tensorflow_version()}.", flush=True)

    tf_estimator = TensorFlow(
        role="default",
        train_instance_count=1,
        train_instance_type="local",
        py_version="py3",
        script_mode=True,
        framework_version="2.16",
        entry_point="train.py",
        output_path=f"file://{WORK}/output",
        source_dir=str(HERE / "keras-single"),
        hyperparameters=HYPERPARAMETERS,
        metric_definitions=[{"Name": "test_accuracy", "Regex": r"test: loss=[0-9.]+ accuracy=([0-9.]+)"}],
    )
    started = time.monotonic()
    tf_estimator.fit({"train": f"file://{data}/train", "test": f"file://{data}/test"})
    seconds = time.monotonic() - started
    status = tf_estimator.latest_training_job.describe()["status"]
    return tf_estimator.model_data, status.get("metrics", {}), seconds


def train_directly(data: Path) -> float:
    """The same script and data, run with plain `python train.py` (what local mode is compared with)."""
    with tempfile.TemporaryDirectory(prefix="ti-demo-direct-") as tmp:
        env = {
            **os.environ,
            "TM_CHANNEL_TRAIN": str(data / "train"),
            "TM_CHANNEL_TEST": str(data / "test"),
            "TM_MODEL_DIR": f"{tmp}/model",
            "TM_OUTPUT_DATA_DIR": f"{tmp}/output/data",
        }
        Path(tmp, "output", "data").mkdir(parents=True)
        argv = [sys.executable, "train.py"]
        for key, value in HYPERPARAMETERS.items():
            argv += [f"--{key}", str(value)]
        started = time.monotonic()
        subprocess.run(
            argv,
            cwd=HERE / "keras-single",
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", action="store_true", help="also time train.py run directly with python")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up notes
    os.environ.setdefault("TI_LOCAL_WORKDIR", str(WORK / "instances"))

    data = WORK / "data"
    runpy.run_path(str(HERE / "make_data.py"))["write"](data)  # four clusters in 16 dimensions
    print(f"Data: {data}/train and {data}/test (made by examples/make_data.py)", flush=True)

    model, metrics, seconds = train_with_the_sdk(data)
    print()
    print(f"Model:         {model}")
    print(f"               ({model.removeprefix('file://')} holds the SavedModel 1/ and model.keras)")
    if "test_accuracy" not in metrics:
        print("Test accuracy: not reported (the job's metric definitions found no 'test:' line)")
        return 1
    print(f"Test accuracy: {metrics['test_accuracy']:.4f}")
    print(f"fit() took:    {seconds:.1f}s")
    if args.compare:
        direct = train_directly(data)
        print(f"python train.py directly: {direct:.1f}s; local mode's overhead: {seconds - direct:+.1f}s "
              f"({seconds / direct:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
