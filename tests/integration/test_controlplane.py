"""The plane is real: each test needs the component it names and fails without it."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.support.controlplane import GPU_LABEL, GPU_RESOURCE, ControlPlane

pytestmark = pytest.mark.integration


def _pod(name: str, gpus: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {"name": "main", "image": "busybox", "resources": {"limits": {GPU_RESOURCE: str(gpus)}}}
                ]
            },
        }
    )


def _wait_for(plane: ControlPlane, ns: str, jsonpath: str, obj: str, want: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    got = ""
    while time.monotonic() < deadline:
        got = plane.kubectl("get", obj, "-n", ns, "-o", f"jsonpath={jsonpath}", check=False).stdout
        if got == want:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{obj} {jsonpath}: wanted {want!r}, last saw {got!r}")


def test_gpu_pod_is_scheduled_to_a_gpu_node_and_runs(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("gpu", 1))
    _wait_for(control_plane, namespace, "{.status.phase}", "pod/gpu", "Running")
    node = control_plane.kubectl("get", "pod/gpu", "-n", namespace, "-o", "jsonpath={.spec.nodeName}").stdout
    labels = control_plane.kubectl("get", "node", node, "-o", "jsonpath={.metadata.labels}").stdout
    assert GPU_LABEL in labels, f"scheduled onto {node}, which has no GPU label: {labels}"


def test_pod_asking_for_more_gpus_than_any_node_stays_unschedulable(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("greedy", 100))
    _wait_for(
        control_plane,
        namespace,
        '{.status.conditions[?(@.type=="PodScheduled")].reason}',
        "pod/greedy",
        "Unschedulable",
    )
    message = control_plane.kubectl(
        "get",
        "pod/greedy",
        "-n",
        namespace,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}',
    ).stdout
    assert "Insufficient nvidia.com/gpu" in message
    assert (
        control_plane.kubectl("get", "pod/greedy", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
        == "Pending"
    )


def test_owned_configmap_is_garbage_collected_with_its_owner(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = control_plane.kubectl(
        "get", "configmap/owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(owned))
    control_plane.kubectl("delete", "configmap/owner", "-n", namespace)
    deadline = time.monotonic() + 30
    while control_plane.kubectl("get", "configmap/owned", "-n", namespace, check=False).returncode == 0:
        assert time.monotonic() < deadline, "the garbage collector never deleted the owned ConfigMap"
        time.sleep(0.3)


def test_service_account_without_a_role_is_denied(
    control_plane: ControlPlane, namespace: str, tmp_path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = control_plane.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    kubeconfig = control_plane.kubeconfig_for_token(token, tmp_path / "nobody.kubeconfig", namespace)
    who = control_plane.kubectl(
        "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
    )
    assert who.stdout == f"system:serviceaccount:{namespace}:nobody", "the signed token did not authenticate"
    denied = control_plane.kubectl("--kubeconfig", str(kubeconfig), "get", "pods", check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and f"system:serviceaccount:{namespace}:nobody" in denied.stderr
