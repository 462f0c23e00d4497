"""The operator on the real control plane: jobs become pods, and status tells the truth."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.support.controlplane import GPU_LABEL, ControlPlane
from tests.support.operator import Kubelet

pytestmark = pytest.mark.integration

BUCKET = "cos://models-1250000000"


def job_manifest(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "role": "trainer",
        "instanceType": "ML.GN8.3XLARGE112",
        "instanceCount": 1,
        "frameworkVersion": "2.0.0",
        "pyVersion": "py3",
        "entryPoint": "train.py",
        "sourceDir": f"{BUCKET}/src/sourcedir.tar.gz",
        "outputPath": f"{BUCKET}/out",
        "inputs": {"training": f"{BUCKET}/data"},
    }
    base.update(spec)
    return {
        "apiVersion": "training.ti.io/v1alpha1",
        "kind": "TFTrainingJob",
        "metadata": {"name": name},
        "spec": base,
    }


def apply(plane: ControlPlane, ns: str, manifest: dict[str, Any]) -> None:
    plane.kubectl("create", "serviceaccount", "trainer", "-n", ns, check=False)
    plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest))


def job(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(plane.kubectl("get", "tftj", name, "-n", ns, "-o", "json").stdout)
    return found


def pods(plane: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    out = plane.kubectl("get", "pods", "-n", ns, "-l", f"training.ti.io/job-name={name}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw {last!r}")


def phase_is(plane: ControlPlane, ns: str, name: str, want: str) -> Callable[[], Any]:
    def check() -> Any:
        status = job(plane, ns, name).get("status") or {}
        return status if status.get("phase") == want else None

    return check


@pytest.mark.parametrize("count", [1, 4])
def test_gpu_job_runs_on_gpu_nodes_and_completes_with_its_model(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, count: int
) -> None:
    start_operator()
    apply(
        control_plane, namespace, job_manifest("mnist", instanceCount=count, hyperparameters={"epochs": "3"})
    )
    running = eventually(
        lambda: (
            [p for p in pods(control_plane, namespace, "mnist") if p["status"].get("phase") == "Running"]
            if len(pods(control_plane, namespace, "mnist")) == count
            else None
        ),
        f"{count} running pods",
    )
    assert len(running) == count
    for p in pods(control_plane, namespace, "mnist"):
        node = p["spec"]["nodeName"]
        labels = json.loads(
            control_plane.kubectl("get", "node", node, "-o", "jsonpath={.metadata.labels}").stdout
        )
        assert labels.get(GPU_LABEL) == "true", f"{p['metadata']['name']} landed on {node}, not a GPU node"
        main = next(c for c in p["spec"]["containers"] if c["name"] == "tensorflow")
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["TM_CHANNEL_TRAINING"] == "/opt/ml/input/data/training"
        assert json.loads(env["TM_HPS"]) == {"epochs": "3"}
        assert main["resources"]["limits"]["nvidia.com/gpu"]
        if count > 1:
            tf_config = json.loads(env["TF_CONFIG"])
            assert len(tf_config["cluster"]["worker"]) == count
            assert tf_config["task"] == {
                "type": "worker",
                "index": int(p["metadata"]["labels"]["training.ti.io/instance-index"]),
            }
    if count > 1:
        svc = json.loads(
            control_plane.kubectl("get", "service", "mnist", "-n", namespace, "-o", "json").stdout
        )
        assert svc["spec"]["clusterIP"] == "None"
    eventually(phase_is(control_plane, namespace, "mnist", "Training"), "phase Training")

    for p in pods(control_plane, namespace, "mnist"):
        kubelet.finish(p["metadata"]["name"], exit_code=0)
    status = eventually(phase_is(control_plane, namespace, "mnist", "Completed"), "phase Completed")
    assert status["modelArtifacts"] == f"{BUCKET}/out/mnist/output/model.tar.gz"
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["status"] == "True"
    events = control_plane.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=mnist",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert "Created" in events and "Completed" in events


def test_user_error_fails_at_once_with_the_scripts_reason(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet
) -> None:
    start_operator()
    apply(control_plane, namespace, job_manifest("broken", runPolicy={"backoffLimit": 3}))
    pod = eventually(lambda: pods(control_plane, namespace, "broken"), "the pod")[0]["metadata"]["name"]
    kubelet.finish(pod, exit_code=1, message="ValueError: learning rate must be positive")
    status = eventually(phase_is(control_plane, namespace, "broken", "Failed"), "phase Failed")
    assert "learning rate must be positive" in status["failureReason"]
    assert status["restartCount"] == 0
    time.sleep(2)
    assert [p["metadata"]["name"] for p in pods(control_plane, namespace, "broken")] == [pod], (
        "a user error was retried"
    )
