"""The examples on the real node: the operator (on the host) renders the pods, a real kubelet runs
them from the locally built images, TensorFlow trains, the toolkit uploads the model to the loopback
store. Nothing here is played by the test."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import jobs
from tests.support.controlplane import REPO, ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from tests.support.operator import OperatorProcess
from tests.support.realnode import RealNode

pytestmark = [pytest.mark.integration, pytest.mark.training]

EXAMPLES = REPO / "examples"
TRAINING_TIMEOUT = 420


def run_example(
    real_node: RealNode,
    plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
    example: str,
) -> tuple[str, dict]:
    real_node.upload_example(EXAMPLES / example, object_store, bucket, f"ti-examples/{example}")
    real_node.storage_secret(namespace, object_store)
    operator = start_operator(**real_node.operator_env(object_store))
    manifest = real_node.job_manifest(EXAMPLES / f"{example}.yaml", bucket)
    name = manifest["metadata"]["name"]
    jobs.apply(plane, namespace, manifest)

    def ended() -> dict | None:
        status = jobs.job(plane, namespace, name).get("status") or {}
        assert operator.alive(), operator.tail()
        return status if status.get("phase") in ("Completed", "Failed", "Stopped") else None

    try:
        status = jobs.eventually(ended, f"{name} to end", timeout=TRAINING_TIMEOUT)
    except AssertionError:
        sys.stderr.write(plane.kubectl("describe", "pods", "-n", namespace, check=False).stdout)
        raise
    assert status["phase"] == "Completed", (status, operator.tail())
    return name, status


def model_files(object_store: LoopbackObjectStore, bucket: str, key: str, dest: Path) -> list[str]:
    body = object_store.client().get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(dest, filter="data")
        return sorted(tar.getnames())


def test_keras_single_completes_on_a_real_kubelet_with_a_loadable_savedmodel(
    real_node: RealNode,
    control_plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    name, status = run_example(
        real_node, control_plane, namespace, object_store, bucket, start_operator, "keras-single"
    )
    key = f"ti-examples/output/{name}/output/model.tar.gz"
    assert status["modelArtifacts"] == f"cos://{bucket}/{key}"
    names = model_files(object_store, bucket, key, tmp_path / "model")
    assert "1/saved_model.pb" in [n.removeprefix("./") for n in names], names
    loaded = subprocess.run(
        [
            sys.executable, "-c",
            "import sys, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); "
            "print(sorted(m.signatures.keys()))", str(tmp_path / "model" / "1"),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert "serving_default" in loaded.stdout

    pods = jobs.pods(control_plane, namespace, name)
    assert [p["spec"]["nodeName"] for p in pods] == [real_node.name]
    # The epochs, as the real kubelet serves the training container's log.
    logs = subprocess.run(
        [sys.executable, "-m", "ti.cli", "-n", namespace, "logs", name],
        capture_output=True, text=True, timeout=120, env=control_plane.env, cwd=REPO,
    )  # fmt: skip
    assert logs.returncode == 0, logs.stderr
    for epoch in range(1, 6):
        assert f"epoch {epoch}: loss=" in logs.stdout, logs.stdout
    described = control_plane.kubectl("describe", "tftj", name, "-n", namespace).stdout
    assert "Created" in described and "created 1 pod" in described, described
    reasons = jobs.event_reasons(control_plane, namespace, name)
    assert "Created" in reasons and reasons[-1] in ("Completed", "Succeeded"), reasons


def test_two_workers_train_over_the_headless_service_names_and_the_chief_uploads_one_model(
    real_node: RealNode,
    control_plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    name, status = run_example(
        real_node, control_plane, namespace, object_store, bucket, start_operator, "keras-two-workers"
    )
    pods = jobs.pods(control_plane, namespace, name)
    assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} == {real_node.name}
    tf_configs = []
    for p in pods:
        main = next(c for c in p["spec"]["containers"] if c["name"] not in ("upload",))
        env = {e["name"]: e.get("value") for e in main.get("env", [])}
        tf_configs.append(json.loads(env["TF_CONFIG"]))
    workers = tf_configs[0]["cluster"]["worker"]
    assert all(not w.split(":")[0].replace(".", "").isdigit() for w in workers), workers  # names, not IPs
    models = [k for k in object_store.keys(bucket, "ti-examples/output/") if k.endswith("model.tar.gz")]
    assert models == [f"ti-examples/output/{name}/output/model.tar.gz"], models
    assert status["modelArtifacts"] == f"cos://{bucket}/{models[0]}"
    names = model_files(object_store, bucket, models[0], tmp_path / "model")
    assert any(n.removeprefix("./").startswith("1/") for n in names), names
