"""Stops and faults on the real node, where the kubelet, not the test, decides what a pod went through:
a stopped job's script gets SIGTERM; a script SIGKILLed on its first attempt is retried and resumes from
the checkpoint synced to checkpointPath; a missing image and a missing storage Secret end the job Failed,
naming what is missing, within schedulingTimeoutSeconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import jobs
from tests.support.controlplane import ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from tests.support.operator import OperatorProcess
from tests.support.realnode import RealNode
from tests.support.realnode_jobs import job_ended, read_object, script_job
from ti import contract

pytestmark = pytest.mark.integration

SIGTERM_SCRIPT = """
import os, signal, sys, time
def term(signum, frame):
    print("got SIGTERM", flush=True)
    out = os.environ["TM_OUTPUT_DATA_DIR"]
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "sigterm.txt"), "w").write("bye")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("training", flush=True)
while True:
    time.sleep(0.2)
"""

# First attempt: a checkpoint, time for the upload step to sync it, then SIGKILL (exit 137, a
# platform fault: retried). The retry finds the checkpoint restored and ends.
KILLED_SCRIPT = """
import os, signal, time
ckpt = os.environ["TM_CHECKPOINT_DIR"]
marker = os.path.join(ckpt, "epoch")
if os.path.exists(marker):
    print("resumed from epoch", open(marker).read(), flush=True)
else:
    os.makedirs(ckpt, exist_ok=True)
    open(marker, "w").write("1")
    print("checkpointed epoch 1", flush=True)
    time.sleep(6)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_stop_sends_the_script_sigterm_and_the_job_ends_stopped(
    real_node: RealNode,
    control_plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    real_node.storage_secret(namespace, object_store)
    op = start_operator(**real_node.operator_env(object_store))
    out = script_job(
        real_node, control_plane, namespace, object_store, bucket, tmp_path, "stopme", SIGTERM_SCRIPT
    )
    pod = contract.instance_name("stopme", "worker", 0)

    def training() -> bool:
        logs = control_plane.kubectl("logs", pod, "-n", namespace, "-c", contract.MAIN_CONTAINER, check=False)
        return "training" in logs.stdout

    jobs.eventually(training, "the script to start", timeout=180)
    jobs.patch_job(control_plane, namespace, "stopme", {"spec": {"runPolicy": {"stop": True}}})
    status = jobs.eventually(job_ended(control_plane, namespace, "stopme", op), "the job to stop", timeout=90)
    assert status["phase"] == "Stopped", status
    log_key = contract.log_uri(out, "stopme", pod).removeprefix(f"cos://{bucket}/")
    assert "got SIGTERM" in read_object(object_store, bucket, log_key)


def test_a_sigkilled_first_attempt_is_retried_and_resumes_from_the_synced_checkpoint(
    real_node: RealNode,
    control_plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    real_node.storage_secret(namespace, object_store)
    op = start_operator(**real_node.operator_env(object_store), TI_CHECKPOINT_SYNC_SECONDS="1")
    script_job(
        real_node, control_plane, namespace, object_store, bucket, tmp_path, "killed", KILLED_SCRIPT,
        checkpointPath=f"cos://{bucket}/ckpt", runPolicy={"backoffLimit": 2},
    )  # fmt: skip
    status = jobs.eventually(
        job_ended(control_plane, namespace, "killed", op), "the retry to end", timeout=300
    )
    assert status["phase"] == "Completed", status
    assert "ckpt/epoch" in "".join(object_store.keys(bucket, "ckpt/")), object_store.keys(bucket)
    [pod] = jobs.pods(control_plane, namespace, "killed")
    assert jobs.attempt(pod) == 1, pod["metadata"]["labels"]
    logs = control_plane.kubectl(
        "logs", pod["metadata"]["name"], "-n", namespace, "-c", contract.MAIN_CONTAINER
    )
    assert "resumed from epoch 1" in logs.stdout, logs.stdout


@pytest.mark.parametrize("missing", ["image", "secret"])
def test_a_missing_image_or_storage_secret_fails_the_job_naming_it_within_the_scheduling_timeout(
    real_node: RealNode,
    control_plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
    missing: str,
) -> None:
    real_node.storage_secret(namespace, object_store)
    op = start_operator(**real_node.operator_env(object_store))
    spec: dict[str, Any] = {"runPolicy": {"schedulingTimeoutSeconds": 25}}
    if missing == "image":
        named = spec["image"] = "ti-local/no-such-image:1"
    else:
        named = spec["secret"] = "no-such-secret"
    script_job(
        real_node, control_plane, namespace, object_store, bucket, tmp_path, "doomed", "print(1)", **spec
    )
    status = jobs.eventually(
        job_ended(control_plane, namespace, "doomed", op), "the job to fail", timeout=25 + 30
    )
    assert status["phase"] == "Failed", status
    assert named in (status.get("failureReason") or ""), status
    assert status["reason"] == {"image": "ImagePullFailed", "secret": "ContainerConfigError"}[missing]

    def nothing_running() -> bool:
        pods = jobs.pods(control_plane, namespace, "doomed")
        return not [p for p in pods if p["status"].get("phase") in ("Pending", "Running")]

    jobs.eventually(nothing_running, "nothing left running", timeout=30)
