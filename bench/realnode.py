#!/usr/bin/env python3
"""Real-node benchmark: what our fetch and upload steps cost a training pod, on a real kubelet.

One plane and one real node (the test fixtures: tests/support/controlplane.py, tests/support/realnode.py),
the loopback object store and the operator on the host. The same script runs, --runs times each, in

  ours    a TFTrainingJob on the real node: fetch (init container: code + a --megabytes channel from the
          store), the script in the TensorFlow image under the launcher, upload (the model);
  plain   a plain pod of the same TensorFlow image with the script and the channel baked into it.

Measured per pod, as seen by this process's watch (host clock, which the containers share): pod
scheduled -> script started (the script prints its own start and end times) and script ended -> pod
terminal. Our overhead is ours minus plain, each way. Target: at most 1.5 s each way for 10 MB.

  .venv/bin/python bench/realnode.py [--runs 3] [--megabytes 10]

Needs root, the toolchain, the images (`make test-images`) and a Docker engine (`hack/system-deps.sh`).
Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.controlplane import running_control_plane  # noqa: E402
from tests.support.objectstore import LoopbackObjectStore  # noqa: E402
from tests.support.operator import CRD_FILE, OperatorProcess  # noqa: E402
from tests.support.realnode import RealNode, running_real_node  # noqa: E402
from tests.support.realnode_config import LABEL  # noqa: E402

NS = "bench-realnode"
BAKED = "ti-local/bench-baked:1"
SCRIPT = """import glob, os, time
print(f"SCRIPT_START {time.time():.3f}", flush=True)
data = os.environ.get("TM_CHANNEL_TRAIN", "/data")
size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(data, "**"), recursive=True) if os.path.isfile(f))
model = os.environ.get("TM_MODEL_DIR", "/tmp/model")
os.makedirs(model, exist_ok=True)
open(os.path.join(model, "model.txt"), "w").write(str(size))
print(f"read {size} bytes")
print(f"SCRIPT_END {time.time():.3f}", flush=True)
"""


class PodTimes:
    """Host times at which a watch first saw each pod scheduled and terminal."""

    def __init__(self, node: RealNode) -> None:
        self.scheduled: dict[str, float] = {}
        self.terminal: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(node,), daemon=True)
        self._thread.start()

    def _run(self, node: RealNode) -> None:
        from kubernetes import client, watch

        api = client.CoreV1Api(node.plane.api_client())
        while not self._stop.is_set():
            for ev in watch.Watch().stream(api.list_namespaced_pod, NS, timeout_seconds=5):
                pod, now = ev["object"], time.time()
                name = pod.metadata.name
                if pod.spec.node_name and name not in self.scheduled:
                    self.scheduled[name] = now
                if pod.status.phase in ("Succeeded", "Failed") and name not in self.terminal:
                    self.terminal[name] = now

    def wait(self, name: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while name not in self.terminal:
            if time.monotonic() > deadline:
                raise SystemExit(f"pod {name} did not end within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()


def script_times(node: RealNode, pod: str, container: str) -> tuple[float, float]:
    logs = node.kubectl("logs", "-n", NS, pod, "-c", container).stdout
    marks = dict(line.split()[:2] for line in logs.splitlines() if line.startswith("SCRIPT_"))
    return float(marks["SCRIPT_START"]), float(marks["SCRIPT_END"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=10)
    args = parser.parse_args()
    store = LoopbackObjectStore().start()
    work = Path(tempfile.mkdtemp(prefix="ti-bench-realnode-"))
    with running_control_plane() as plane, running_real_node(plane) as node:
        plane.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        plane.kubectl("wait", "--for=condition=Established", "crd/tftrainingjobs.training.ti.io")
        plane.kubectl("create", "namespace", NS)
        while plane.kubectl("get", "sa", "default", "-n", NS, check=False).returncode:
            time.sleep(0.2)
        node.storage_secret(NS, store)
        bucket = store.new_bucket("bench")
        (work / "src").mkdir()
        (work / "src" / "train.py").write_text(SCRIPT)
        (work / "data").mkdir()
        (work / "data" / "part-0.bin").write_bytes(os.urandom(args.megabytes << 20))
        with tarfile.open(work / "sourcedir.tar.gz", "w:gz") as tar:
            tar.add(work / "src" / "train.py", arcname="train.py")
        client = store.client()
        client.upload_file(
            Bucket=bucket, Key="src/sourcedir.tar.gz", LocalFilePath=str(work / "sourcedir.tar.gz")
        )
        # One PUT: the COS SDK's multipart upload_file is more than the loopback store speaks.
        client.put_object(
            Bucket=bucket, Key="data/part-0.bin", Body=(work / "data" / "part-0.bin").read_bytes()
        )
        (work / "Dockerfile").write_text(
            f"FROM {node.images['tensorflow']}\nCOPY src/train.py /opt/bench/train.py\nCOPY data /data\n"
        )
        subprocess.run(
            ["docker", "build", "-q", "-t", BAKED, str(work)],
            check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )  # fmt: skip
        node.import_images(BAKED)
        env = {**plane.env, "TI_OPERATOR_METRICS_PORT": "0", **node.operator_env(store)}
        operator = OperatorProcess(NS, work / "operator.log", env).start()
        times = PodTimes(node)
        rows: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
        try:
            for run in range(args.runs):
                name = f"ours-{run}"
                job = {
                    "apiVersion": "training.ti.io/v1alpha1",
                    "kind": "TFTrainingJob",
                    "metadata": {"name": name},
                    "spec": {
                        "role": "default",
                        "instanceType": node.instance_type,
                        "frameworkVersion": "2.16",
                        "entryPoint": "train.py",
                        "sourceDir": f"cos://{bucket}/src/sourcedir.tar.gz",
                        "inputs": {"train": f"cos://{bucket}/data"},
                        "outputPath": f"cos://{bucket}/out",
                        "storageSecretRef": {"name": "ti-cos-credentials"},
                    },
                }
                node.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(job))
                pod = f"{name}-worker-0"
                times.wait(pod)
                start, end = script_times(node, pod, "tensorflow")
                rows["ours"].append((start - times.scheduled[pod], times.terminal[pod] - end))
                plain = plain_pod(f"plain-{run}")
                node.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(plain))
                times.wait(plain["metadata"]["name"])
                start, end = script_times(node, plain["metadata"]["name"], "main")
                name = plain["metadata"]["name"]
                rows["plain"].append((start - times.scheduled[name], times.terminal[name] - end))
        finally:
            times.stop()
            operator.stop()
            store.stop()
    report(rows, args.megabytes)


def plain_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {LABEL: "true"},
            "tolerations": [{"key": LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "main",
                    "image": BAKED,
                    "command": ["python3", "/opt/bench/train.py"],
                    "resources": {
                        "requests": {"cpu": "800m", "memory": "2Gi"},
                        "limits": {"cpu": "800m", "memory": "2Gi"},
                    },
                }
            ],
        },
    }


def report(rows: dict[str, list[tuple[float, float]]], megabytes: int) -> None:
    def med(kind: str, i: int) -> float:
        return statistics.median(r[i] for r in rows[kind])

    print(f"\nreal node, {megabytes} MB channel, median of {len(rows['ours'])} runs (seconds)")
    print(f"{'':28}{'ours':>8}{'plain':>8}{'overhead':>10}  target")
    for i, what in enumerate(("scheduled -> script started", "script ended -> pod terminal")):
        ours, plain = med("ours", i), med("plain", i)
        print(
            f"{what:28}{ours:8.2f}{plain:8.2f}{ours - plain:10.2f}  <= 1.5 {'met' if ours - plain <= 1.5 else 'NOT met'}"
        )
    for kind, values in rows.items():
        print(f"  {kind}: " + ", ".join(f"({a:.2f}, {b:.2f})" for a, b in values))


if __name__ == "__main__":
    main()
