"""The operator on the real control plane: jobs become pods, and status tells the truth."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.controlplane import GPU_LABEL, ControlPlane
from tests.support.jobs import BUCKET, apply, eventually, job_manifest, phase_is, pods
from tests.support.operator import Kubelet

pytestmark = pytest.mark.integration


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
