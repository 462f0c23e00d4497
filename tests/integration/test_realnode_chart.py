"""The chart for real: `helm install` with the locally built operator image runs the operator in a pod on
the real node, in-cluster (the API through the `kubernetes` Service), under the chart's own
ServiceAccount and RBAC; it takes the example job to Completed; `helm uninstall` leaves none of its pods."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support import jobs
from tests.support.controlplane import REPO, ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from tests.support.realnode import RealNode

pytestmark = [pytest.mark.integration, pytest.mark.training]

CHART = REPO / "charts" / "ti-operator"


def helm(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(plane.bin / "helm"), *args], capture_output=True, text=True, env=plane.env, timeout=300
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc


def operator_pods(plane: ControlPlane, ns: str) -> list[dict]:
    out = plane.kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=ti-operator", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def test_the_chart_installed_with_helm_runs_the_operator_in_cluster_and_completes_a_job(
    real_node: RealNode,
    control_plane: ControlPlane,
    crd: Path,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    tmp_path: Path,
) -> None:
    real_node.upload_example(
        REPO / "examples" / "keras-single", object_store, bucket, "ti-examples/keras-single"
    )
    real_node.storage_secret(namespace, object_store)
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(real_node.chart_values(object_store, namespace)))
    helm(
        control_plane, "install", "ti-operator", str(CHART), "-n", namespace, "--skip-crds",
        "-f", str(values), "--wait", "--timeout", "180s",
    )  # fmt: skip
    try:
        [pod] = operator_pods(control_plane, namespace)
        assert pod["spec"]["nodeName"] == real_node.name
        assert pod["spec"]["serviceAccountName"] == "ti-operator"
        assert pod["spec"]["containers"][0]["image"] == real_node.images["operator"]

        manifest = real_node.job_manifest(REPO / "examples" / "keras-single.yaml", bucket, name="from-chart")
        manifest["spec"]["hyperparameters"]["epochs"] = "2"
        jobs.apply(control_plane, namespace, manifest)

        def ended() -> dict | None:
            status = jobs.job(control_plane, namespace, "from-chart").get("status") or {}
            return status if status.get("phase") in ("Completed", "Failed") else None

        try:
            status = jobs.eventually(ended, "the chart's operator to complete the job", timeout=420)
        except AssertionError:
            logs = control_plane.kubectl("logs", "-n", namespace, pod["metadata"]["name"], check=False)
            sys.stderr.write(f"--- operator pod log\n{logs.stdout[-5000:]}\n")
            raise
        assert status["phase"] == "Completed", status
        key = "ti-examples/output/from-chart/output/model.tar.gz"
        assert status["modelArtifacts"] == f"cos://{bucket}/{key}"
        assert key in object_store.keys(bucket, "ti-examples/output/")
        # It reached the API in-cluster, as its ServiceAccount: the operator's own Events prove it.
        events = jobs.events(control_plane, namespace, "from-chart")
        assert any(e["reason"] == "Created" for e in events), events
    finally:
        helm(control_plane, "uninstall", "ti-operator", "-n", namespace, "--wait", "--timeout", "120s")
    deadline = time.monotonic() + 60
    while operator_pods(control_plane, namespace):
        assert time.monotonic() < deadline, operator_pods(control_plane, namespace)
        time.sleep(0.5)
