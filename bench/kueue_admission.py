#!/usr/bin/env python3
"""Kueue admission latency: a TFTrainingJob against a plain batch/v1 Job, admitted by the same Kueue.

One real control plane and one real Kueue controller (the test fixtures: tests/support/controlplane.py,
tests/support/kueue.py), a ClusterQueue with free quota for everything submitted. For each system in
turn, in a namespace of its own: `--jobs` one-instance jobs labelled kueue.x-k8s.io/queue-name, one
every `--every` seconds (so each meets free quota and an idle Kueue, and the figure is a latency, not a
queue's throughput), with the same pod (the pod ti-operator renders).

Measured per job: the create request returning -> its pod seen by this process's watch. For ours that is
operator (Workload created) -> Kueue (admitted) -> operator (pod created); for the Job it is Kueue's
webhook (suspended on create) -> Kueue (admitted, unsuspended) -> the Job controller (pod created).
Printed: p50 and p99 of each, and ours / Job.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, watch  # noqa: E402

from bench.control_plane import job_manifest, ours_manifest, percentile, pod_spec  # noqa: E402
from tests.support.controlplane import ControlPlane, running_control_plane  # noqa: E402
from tests.support.kueue import FLAVOR_CPU, FLAVOR_GPU, QUEUE_LABEL, running_kueue  # noqa: E402
from tests.support.operator import OperatorProcess  # noqa: E402

CRD = REPO / "crds" / "tftrainingjobs.training.ti.io.yaml"
JOB_LABEL = {"ours": "training.ti.io/job-name", "job": "batch.kubernetes.io/job-name"}
QUOTA = {"cpu": "1000", "memory": "10Ti", "nvidia.com/gpu": "0"}


def log(message: str) -> None:
    print(f"[kueue-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class PodsSeen(threading.Thread):
    """When this process first saw a pod of each job (by the system's job label)."""

    def __init__(self, core: client.CoreV1Api, namespace: str, label: str) -> None:
        super().__init__(daemon=True)
        self.core, self.namespace, self.label = core, namespace, label
        self.first: dict[str, float] = {}
        self.ready = threading.Event()
        self._watch = watch.Watch()

    def run(self) -> None:
        listed = self.core.list_namespaced_pod(self.namespace)
        version = listed.metadata.resource_version
        self.ready.set()
        try:
            for event in self._watch.stream(
                self.core.list_namespaced_pod, self.namespace, resource_version=version, timeout_seconds=600
            ):
                job = (event["object"].metadata.labels or {}).get(self.label)
                if job and job not in self.first:
                    self.first[job] = time.monotonic()
        except Exception:  # the stream cut by stop(): what it saw is kept
            return

    def stop(self) -> None:
        self._watch.stop()


def submit(plane: ControlPlane, system: str, namespace: str, jobs: int, every: float) -> list[float]:
    api = plane.api_client()
    core = client.CoreV1Api(api)
    seen = PodsSeen(core, namespace, JOB_LABEL[system])
    seen.start()
    seen.ready.wait(30)
    created: dict[str, float] = {}
    for i in range(jobs):
        name = f"{system}-{i:03d}"
        if system == "ours":
            body = ours_manifest(name, 1)
            body["metadata"]["labels"] = {QUEUE_LABEL: "main"}
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                "training.ti.io", "v1alpha1", namespace, "tftrainingjobs", body
            )
        else:
            body = job_manifest(name, 1, pod_spec(namespace, 1))
            body["metadata"]["labels"] = {QUEUE_LABEL: "main"}
            client.BatchV1Api(api).create_namespaced_job(namespace, body)
        created[name] = time.monotonic()
        time.sleep(every)
    deadline = time.monotonic() + 120
    while len(seen.first) < jobs and time.monotonic() < deadline:
        time.sleep(0.2)
    seen.stop()
    missing = sorted(set(created) - set(seen.first))
    if missing:
        raise SystemExit(f"{system}: no pod within 120 s for {len(missing)} jobs, e.g. {missing[:3]}")
    return [seen.first[n] - created[n] for n in created]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between two submissions")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "kueue_results.json")
    args = parser.parse_args()

    results: dict[str, Any] = {"jobs": args.jobs, "every_seconds": args.every}
    with running_control_plane() as plane, running_kueue(plane) as kueue:
        log(f"plane and Kueue {kueue.version} up; Kueue ready in {kueue.startup_seconds:.1f}s")
        plane.kubectl("apply", "--server-side", "-f", str(CRD))
        work = Path(tempfile.mkdtemp(prefix="ti-kueue-bench-"))
        for system in ("ours", "job"):
            namespace = f"kueue-bench-{system}"
            plane.kubectl("create", "namespace", namespace)
            kueue.queue(namespace, quotas={FLAVOR_CPU: QUOTA, FLAVOR_GPU: QUOTA})
            operator = None
            if system == "ours":
                env = {**plane.env, "TI_OPERATOR_METRICS_PORT": "0"}
                operator = OperatorProcess(namespace, work / "operator.log", env).start()
                time.sleep(5)  # kopf's start-up and first watch
            log(f"{system}: {args.jobs} jobs, one every {args.every}s")
            latencies = submit(plane, system, namespace, args.jobs, args.every)
            if operator is not None:
                operator.stop()
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            assert p50 is not None and p99 is not None
            results[system] = {"p50": p50, "p99": p99, "max": max(latencies)}
            log(f"{system}: create -> pod p50 {p50:.2f}s, p99 {p99:.2f}s, max {max(latencies):.2f}s")
    ours, job = results["ours"], results["job"]
    results["ratio"] = {"p50": ours["p50"] / job["p50"], "p99": ours["p99"] / job["p99"]}
    print(
        f"| Kueue {kueue.version}, {args.jobs} jobs | p50 (s) | p99 (s) |\n|---|---|---|\n"
        f"| TFTrainingJob | {ours['p50']:.2f} | {ours['p99']:.2f} |\n"
        f"| batch/v1 Job | {job['p50']:.2f} | {job['p99']:.2f} |\n"
        f"| ours / Job | {results['ratio']['p50']:.2f}x | {results['ratio']['p99']:.2f}x |"
    )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
