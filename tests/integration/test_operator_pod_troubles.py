"""What a real kubelet writes that kwok's defaults never do (issue 13): containers waiting on an image
that cannot be pulled or a Secret that does not exist, and pods whose training ended while their upload
step still runs. kwok runs the pods; the tests write the states a kubelet writes, on the real plane.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.jobs import (
    apply,
    condition,
    events,
    eventually,
    job,
    job_manifest,
    phase_is,
    pods,
    running_pods,
)
from tests.support.operator import Kubelet, assert_logs_clean

pytestmark = pytest.mark.integration

FAST = {"TI_RESYNC_SECONDS": "2", "TI_STOP_GRACE_SECONDS": "1"}
CPU = "TI.S.MEDIUM.POST"
IMAGE = "tensorflow/tensorflow:2.0.0-py3"  # job_manifest's framework 2.0.0 on a CPU type
# Pods of this type fit no node, so the scheduler leaves them and the test binds them to a node that
# no kwok runs: their status is then the test's alone to write, from the very first container state.
PHANTOM_TYPE = "TEST.PHANTOM"
PHANTOM_LABEL = "ti.test/phantom"
PULL_ERROR = (
    f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = failed to pull and unpack image '
    f'"docker.io/{IMAGE}": failed to resolve reference "docker.io/{IMAGE}": not found'
)


@pytest.fixture(autouse=True)
def operator_logs_stay_clean(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[None]:
    yield
    # Pods the test took over from kwok never end by themselves; they would hold kwok's capacity.
    out = control_plane.kubectl("get", "pods", "-n", namespace, "-o", "name", check=False).stdout.split()
    if out:
        control_plane.kubectl(
            "delete", *out, "-n", namespace, "--grace-period=0", "--force", "--wait=false", check=False
        )
    assert_logs_clean(tmp_path)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def container(pod: dict[str, Any], name: str, state: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    image = next(c["image"] for c in spec["containers"] + spec["initContainers"] if c["name"] == name)
    return {"name": name, "image": image, "imageID": "", "ready": False, "restartCount": 0, "state": state}


def ended(code: int, message: str | None = None) -> dict[str, Any]:
    end: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": now(),
        "finishedAt": now(),
    }
    if message:
        end["message"] = message
    return {"terminated": end}


RUNNING: dict[str, Any] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}


def write_status(
    plane: ControlPlane,
    kubelet: Kubelet,
    name: str,
    phase: str,
    fetch: dict[str, Any],
    main: dict[str, Any] | None = None,
    upload: dict[str, Any] | None = None,
) -> None:
    """What the kubelet reports of pod `name`: its phase and each container's state."""
    kubelet.hold(name)
    pod = kubelet.pod(name)
    status: dict[str, Any] = {
        "phase": phase,
        "initContainerStatuses": [container(pod, "fetch", fetch)],
        "containerStatuses": [
            container(pod, "tensorflow", main or {"waiting": {"reason": "PodInitializing"}}),
            container(pod, "upload", upload or {"waiting": {"reason": "PodInitializing"}}),
        ],
    }
    plane.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        kubelet.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


@pytest.fixture
def phantom_operator(start_operator, tmp_path: Path):  # type: ignore[no-untyped-def]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "instanceTypes": {
                    PHANTOM_TYPE: {"cpu": 1, "memory": "1Gi", "nodeSelector": {PHANTOM_LABEL: "true"}}
                }
            }
        )
    )
    return start_operator(TI_CATALOG_FILE=str(catalog), **FAST)


def bind_to_phantom(plane: ControlPlane, ns: str, pod: str) -> None:
    """What the scheduler does, to a node name that no kubelet (and no kwok) answers for."""
    eventually(lambda: plane.kubectl("get", "pod", pod, "-n", ns, check=False).returncode == 0, f"pod {pod}")
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "phantom-node"},
    }
    plane.kubectl("create", "-f", "-", input=yaml.safe_dump(binding))


def warnings(plane: ControlPlane, ns: str, name: str, reason: str) -> list[str]:
    return [e["message"] for e in events(plane, ns, name) if e["reason"] == reason and e["type"] == "Warning"]


def test_an_image_that_cannot_be_pulled_is_named_at_once_and_fails_at_the_timeout(
    control_plane: ControlPlane, namespace: str, phantom_operator, kubelet: Kubelet
) -> None:
    apply(
        control_plane,
        namespace,
        job_manifest("nopull", instanceType=PHANTOM_TYPE, runPolicy={"schedulingTimeoutSeconds": 20}),
    )
    bind_to_phantom(control_plane, namespace, "nopull-worker-0")
    # The kubelet could not pull the training image; it started the upload step anyway, as it does.
    waiting = {"waiting": {"reason": "ErrImagePull", "message": PULL_ERROR}}
    write_status(control_plane, kubelet, "nopull-worker-0", "Pending", ended(0), waiting, RUNNING)

    def named() -> dict[str, Any] | None:
        status = job(control_plane, namespace, "nopull").get("status") or {}
        return status if status.get("reason") == "ImagePullFailed" else None

    status = eventually(named, "status.reason ImagePullFailed while the job waits", timeout=15)
    assert status["phase"] == "Downloading"
    running = condition(status, "Running")
    assert running is not None, status
    assert IMAGE in running["message"] and "failed to resolve reference" in running["message"]
    assert "nopull-worker-0" in running["message"] and "instances are" not in running["message"]
    said = eventually(
        lambda: warnings(control_plane, namespace, "nopull", "ImagePullFailed"), "a Warning Event"
    )
    assert len(said) == 1 and IMAGE in said[0] and "failed to resolve reference" in said[0]

    # The kubelet backs off and says so with the same error: no second Event for the same story.
    backoff = {
        "waiting": {
            "reason": "ImagePullBackOff",
            "message": f'Back-off pulling image "{IMAGE}": ErrImagePull: {PULL_ERROR}',
        }
    }
    write_status(control_plane, kubelet, "nopull-worker-0", "Pending", ended(0), backoff, RUNNING)
    time.sleep(3)  # a resync or two
    assert len(warnings(control_plane, namespace, "nopull", "ImagePullFailed")) == 1

    # Still failing when runPolicy.schedulingTimeoutSeconds has passed: the job fails, names the image,
    # and frees the pod.
    status = eventually(phase_is(control_plane, namespace, "nopull", "Failed"), "phase Failed", timeout=40)
    assert status["reason"] == "ImagePullFailed"
    assert "schedulingTimeoutSeconds (20s)" in status["failureReason"] and IMAGE in status["failureReason"]
    eventually(
        lambda: all(p["metadata"].get("deletionTimestamp") for p in pods(control_plane, namespace, "nopull")),
        "the stuck pod deleted",
    )


def test_a_missing_secret_is_named_while_the_job_starts(
    control_plane: ControlPlane, namespace: str, phantom_operator, kubelet: Kubelet
) -> None:
    manifest = job_manifest("nosecret", instanceType=PHANTOM_TYPE, storageSecretRef={"name": "team-cos"})
    apply(control_plane, namespace, manifest)
    bind_to_phantom(control_plane, namespace, "nosecret-worker-0")
    waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "team-cos" not found'}}
    write_status(control_plane, kubelet, "nosecret-worker-0", "Pending", waiting)

    def named() -> dict[str, Any] | None:
        status = job(control_plane, namespace, "nosecret").get("status") or {}
        return status if status.get("reason") == "ContainerConfigError" else None

    status = eventually(named, "status.reason ContainerConfigError", timeout=15)
    assert status["phase"] == "Starting"
    running = condition(status, "Running")
    assert running is not None and running["status"] == "False", status
    assert running["reason"] == "ContainerConfigError"
    assert 'secret "team-cos" not found' in running["message"] and "fetch" in running["message"]
    said = eventually(
        lambda: warnings(control_plane, namespace, "nosecret", "ContainerConfigError"), "a Warning Event"
    )
    assert len(said) == 1 and 'secret "team-cos" not found' in said[0]


def test_pods_whose_training_ended_are_kept_for_their_logs_while_the_upload_step_runs(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet
) -> None:
    """cleanPodPolicy Running deletes pods that still train, never one whose script has ended: its
    upload step stores the log, and `kubectl logs` must still find the failed instance."""
    start_operator(**FAST)
    apply(
        control_plane,
        namespace,
        job_manifest("keep", instanceType=CPU, instanceCount=3, runPolicy={"cleanPodPolicy": "Running"}),
    )
    eventually(running_pods(control_plane, namespace, "keep", 3, 0), "3 running pods")
    # Worker 1's script failed; its upload step is still storing the log.
    write_status(
        control_plane, kubelet, "keep-worker-1", "Running", ended(0), ended(1, "ValueError: bad"), RUNNING
    )
    # Worker 0's containers have all ended, but the kubelet has not marked the pod terminal yet (it does
    # so only once the pod's teardown is done, about a second later).
    write_status(
        control_plane,
        kubelet,
        "keep-worker-0",
        "Running",
        ended(0),
        ended(1, "ValueError: lr < 0"),
        ended(1, "ValueError: lr < 0"),
    )
    status = eventually(phase_is(control_plane, namespace, "keep", "Failed"), "phase Failed")
    assert status["reason"] == "TrainingFailed" and "lr < 0" in status["failureReason"]

    def only_the_trainer_deleted() -> bool:
        found = {p["metadata"]["name"]: p for p in pods(control_plane, namespace, "keep")}
        trainer = found.get("keep-worker-2")
        return trainer is None or bool(trainer["metadata"].get("deletionTimestamp"))

    eventually(only_the_trainer_deleted, "worker 2, still training, deleted")
    time.sleep(4)  # resyncs of the finished job
    found = {p["metadata"]["name"]: p for p in pods(control_plane, namespace, "keep")}
    for name in ("keep-worker-0", "keep-worker-1"):
        assert name in found and not found[name]["metadata"].get("deletionTimestamp"), f"{name} was deleted"

    # Worker 1's upload step ends: the pod is terminal, and kept like any finished pod.
    write_status(
        control_plane, kubelet, "keep-worker-1", "Failed", ended(0), ended(1, "ValueError: bad"), ended(1)
    )
    time.sleep(4)
    found = {p["metadata"]["name"]: p for p in pods(control_plane, namespace, "keep")}
    assert "keep-worker-1" in found and not found["keep-worker-1"]["metadata"].get("deletionTimestamp")
    assert job(control_plane, namespace, "keep")["status"]["reason"] == "TrainingFailed"
