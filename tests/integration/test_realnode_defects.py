"""The five pod defects a real kubelet showed (issue 13), each run again on the real node: the operator
on the host renders the pods, a real kubelet runs them from the locally built images. Nothing here is
played by the test; each test would fail on the code before the fix.

1. the termination message inside /opt/ml: the script's reason lost behind the kubelet's bind mount;
2. an image of another user: /opt/ml not writable, the job waiting in Uploading until maxRunSeconds;
3. an image pull or a Secret that fails: nothing said until schedulingTimeoutSeconds;
4. cleanPodPolicy Running deleting a failed instance's pod while its upload step ran;
5. a namespace that enforces Pod Security `restricted` refusing the pods.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import jobs
from tests.support.controlplane import REPO, ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from tests.support.operator import OperatorProcess
from tests.support.realnode import RealNode

pytestmark = [pytest.mark.integration, pytest.mark.training]

EXAMPLES = REPO / "examples"
ENDED = ("Completed", "Failed", "Stopped")


def source(object_store: LoopbackObjectStore, bucket: str, name: str, files: dict[str, str]) -> str:
    """A sourcedir.tar.gz of `files` in the bucket; its URI."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for filename, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(filename)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    key = f"defects/{name}/sourcedir.tar.gz"
    object_store.client().put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"cos://{bucket}/{key}"


class Node:
    """One test's jobs on the real node: an operator for its namespace, the store's Secret."""

    def __init__(
        self,
        real_node: RealNode,
        plane: ControlPlane,
        namespace: str,
        object_store: LoopbackObjectStore,
        bucket: str,
        start_operator: Callable[..., OperatorProcess],
    ) -> None:
        self.node, self.plane, self.ns, self.store, self.bucket = (
            real_node,
            plane,
            namespace,
            object_store,
            bucket,
        )
        real_node.storage_secret(namespace, object_store)
        self.operator = start_operator(**real_node.operator_env(object_store))

    def submit(self, name: str, files: dict[str, str], entry: str = "train.py", **spec: Any) -> str:
        manifest = self.node.job_manifest(EXAMPLES / "keras-single.yaml", self.bucket, name=name)
        manifest["spec"]["runPolicy"].update(spec.pop("runPolicy", {}))
        manifest["spec"].update(
            entryPoint=entry,
            sourceDir=source(self.store, self.bucket, name, files),
            inputs={},
            hyperparameters={},
            **spec,
        )
        jobs.apply(self.plane, self.ns, manifest)
        return name

    def status(self, name: str) -> dict[str, Any]:
        return jobs.job(self.plane, self.ns, name).get("status") or {}

    def wait(self, name: str, timeout: float = 300) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            assert self.operator.alive(), self.operator.tail()
            status = self.status(name)
            return status if status.get("phase") in ENDED else None

        try:
            found: dict[str, Any] = jobs.eventually(ended, f"{name} to end", timeout=timeout)
        except AssertionError:
            print(self.plane.kubectl("describe", "pods", "-n", self.ns, check=False).stdout)
            raise
        return found

    def main_state(self, name: str) -> dict[str, Any]:
        (pod,) = jobs.pods(self.plane, self.ns, name)
        main = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "tensorflow")
        state: dict[str, Any] = main["state"]
        return state


@pytest.fixture
def on_node(
    real_node: RealNode,
    control_plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
) -> Node:
    return Node(real_node, control_plane, namespace, object_store, bucket, start_operator)


def image_of_its_own(real_node: RealNode, tag: str, dockerfile: str, files: dict[str, Path]) -> str:
    """A custom image built here (no registry: FROM scratch) and imported into the node's containerd."""
    with tempfile.TemporaryDirectory() as ctx:
        for name, path in files.items():
            shutil.copy(path, Path(ctx) / name)
        (Path(ctx) / "Dockerfile").write_text(dockerfile)
        built = subprocess.run(
            ["docker", "build", "-q", "-t", tag, ctx],
            capture_output=True, text=True, timeout=300, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    assert built.returncode == 0, built.stderr
    save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["ctr", "--address", str(real_node.lay.containerd_sock), "-n", "k8s.io", "images", "import", "-"],
        stdin=save.stdout, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    save.wait()
    assert save.returncode == 0 and imported.returncode == 0, imported.stderr
    return tag


FAILING = "def train():\n    raise RuntimeError('out of patience: loss is NaN at step 7')\n\ntrain()\n"
SELF_REPORTING = (
    "import os\n"
    "failure = os.path.join(os.path.dirname(os.environ['TM_OUTPUT_DATA_DIR']), 'failure')\n"
    "open(failure, 'w').write('channel train has no rows with label 3')\n"
    "raise RuntimeError('generic error the user did not want shown')\n"
)


def test_1_the_scripts_reason_comes_through_the_real_termination_message(on_node: Node) -> None:
    on_node.submit("raises", {"train.py": FAILING})
    on_node.submit("reports", {"train.py": SELF_REPORTING})
    for name, want, absent in (
        ("raises", "RuntimeError: out of patience: loss is NaN at step 7", None),
        ("reports", "channel train has no rows with label 3", "generic error"),
    ):
        status = on_node.wait(name)
        assert (status["phase"], status["reason"]) == ("Failed", "TrainingFailed"), status
        said = status["failureReason"]
        assert want in said and "Device or resource busy" not in said and "rm:" not in said, said
        if absent:
            assert absent not in said
        terminated = on_node.main_state(name)["terminated"]
        assert want in terminated["message"] and terminated["exitCode"] == 1
    logs = on_node.plane.kubectl("logs", "raises-worker-0", "-c", "tensorflow", "-n", on_node.ns).stdout
    assert "Device or resource busy" not in logs, logs


TRAIN_SH = (
    'echo "training as $(id -u):$(id -g) groups $(id -G)"\n'
    'mkdir -p "$TM_MODEL_DIR/1" && echo graph > "$TM_MODEL_DIR/1/saved_model.pb"\n'
    'echo "{}" > "$TM_OUTPUT_DATA_DIR/history.json"\n'
)


def test_2_an_image_of_another_user_trains_and_one_whose_launcher_cannot_start_fails(
    on_node: Node, real_node: RealNode
) -> None:
    busybox = Path(shutil.which("busybox") or "/usr/bin/busybox")
    own_user = image_of_its_own(
        real_node,
        "ti-local/busybox-uid1000:1",
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "USER 1000:1000\n",
        {"busybox": busybox},
    )
    no_shell = image_of_its_own(
        real_node, "ti-local/no-shell:1", "FROM scratch\nCOPY busybox /busybox\n", {"busybox": busybox}
    )
    on_node.submit("uid1000", {"train.sh": TRAIN_SH}, entry="train.sh", image=own_user)
    began = time.monotonic()
    on_node.submit("noshell", {"train.sh": TRAIN_SH}, entry="train.sh", image=no_shell)

    status = on_node.wait("uid1000")
    assert status["phase"] == "Completed", status
    logs = on_node.plane.kubectl("logs", "uid1000-worker-0", "-c", "tensorflow", "-n", on_node.ns).stdout
    # Its own user, with the pod's group (fsGroup) beside the runtime's choice of primary group.
    said = logs.split("training as ", 1)[1].split()
    assert said[0].startswith("1000:") and "65532" in said[2:], logs
    key = "ti-examples/output/uid1000/output/model.tar.gz"
    assert key in on_node.store.keys(on_node.bucket, "ti-examples/output/uid1000/")

    status = on_node.wait("noshell", timeout=120)
    assert (status["phase"], status["reason"]) == ("Failed", "ContainerConfigError"), status
    assert "/bin/sh" in status["failureReason"], status
    assert time.monotonic() - began < 120, "the job waited for an upload step that could never start"


def test_3_an_image_that_cannot_be_pulled_and_a_missing_secret_are_named_within_the_timeout(
    on_node: Node,
) -> None:
    missing = "ti-local/does-not-exist:1"
    on_node.submit(
        "nopull", {"train.py": "print('never')\n"}, image=missing, runPolicy={"schedulingTimeoutSeconds": 60}
    )
    on_node.submit(
        "nosecret",
        {"train.py": "print('never')\n"},
        storageSecretRef={"name": "no-such-secret"},
        runPolicy={"schedulingTimeoutSeconds": 60},
    )

    def named(name: str, reason: str) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            status = on_node.status(name)
            return status if status.get("reason") == reason and status.get("phase") not in ENDED else None

        return check

    waiting = jobs.eventually(named("nopull", "ImagePullFailed"), "nopull named while waiting", timeout=50)
    running = jobs.condition(waiting, "Running")
    assert running is not None and missing in running["message"], waiting
    waiting = jobs.eventually(named("nosecret", "ContainerConfigError"), "nosecret named", timeout=50)
    running = jobs.condition(waiting, "Running")
    assert running is not None and "no-such-secret" in running["message"], waiting
    for name, reason, says in (
        ("nopull", "ImagePullFailed", missing),
        ("nosecret", "ContainerConfigError", "no-such-secret"),
    ):
        status = on_node.wait(name, timeout=120)
        assert (status["phase"], status["reason"]) == ("Failed", reason), status
        assert "schedulingTimeoutSeconds (60s)" in status["failureReason"] and says in status["failureReason"]
        warned = [e["message"] for e in jobs.events(on_node.plane, on_node.ns, name) if e["reason"] == reason]
        assert warned and says in warned[0]
        jobs.eventually(lambda n=name: jobs.pods(on_node.plane, on_node.ns, n) == [], f"{name}: pod gone")


def test_4_a_failed_instances_pod_stays_for_kubectl_logs(on_node: Node) -> None:
    script = "import time\nprint('the line before the failure', flush=True)\ntime.sleep(2)\nraise SystemExit('bad data')\n"
    on_node.submit("keeplogs", {"train.py": script}, runPolicy={"cleanPodPolicy": "Running"})
    status = on_node.wait("keeplogs")
    assert (status["phase"], status["reason"]) == ("Failed", "TrainingFailed"), status
    time.sleep(5)  # resyncs of the failed job, and the kubelet marking the pod terminal
    (pod,) = jobs.pods(on_node.plane, on_node.ns, "keeplogs")
    assert not pod["metadata"].get("deletionTimestamp"), "the failed instance's pod is being deleted"
    logs = on_node.plane.kubectl("logs", "keeplogs-worker-0", "-c", "tensorflow", "-n", on_node.ns).stdout
    assert "the line before the failure" in logs


def test_5_a_restricted_namespace_admits_and_completes_a_catalog_image_job(
    on_node: Node, real_node: RealNode
) -> None:
    on_node.plane.kubectl(
        "label", "namespace", on_node.ns,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    real_node.upload_example(
        EXAMPLES / "keras-single", on_node.store, on_node.bucket, "ti-examples/keras-single"
    )
    manifest = real_node.job_manifest(EXAMPLES / "keras-single.yaml", on_node.bucket, name="strict")
    jobs.apply(on_node.plane, on_node.ns, manifest)
    status = on_node.wait("strict", timeout=420)
    assert status["phase"] == "Completed", status
    (pod,) = jobs.pods(on_node.plane, on_node.ns, "strict")
    assert pod["spec"]["nodeName"] == real_node.name
