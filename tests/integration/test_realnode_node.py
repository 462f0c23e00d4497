"""The real node itself (tests/support/realnode.py): real containers from the locally built images, on
the plane the kwok tests use, with what the operator's pods rely on: `kubectl logs`, termination
messages, DNS names of a headless Service, the API server through the `kubernetes` Service, the
loopback object store at the bridge address."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from tests.support.realnode import RealNode
from tests.support.realnode_config import HOST_IP, LABEL

pytestmark = pytest.mark.integration

PROBE = r"""
import json, socket, ssl, sys, urllib.request
out = {}
out["dns"] = socket.gethostbyname("probe-0.probes")
out["api_ip"] = socket.gethostbyname("kubernetes.default.svc.cluster.local")
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
req = urllib.request.Request("https://kubernetes.default.svc/version", headers={"Authorization": "Bearer " + token})
out["api"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
try:
    urllib.request.urlopen(sys.argv[1], timeout=10)
except urllib.error.HTTPError as e:  # the store answers (403 without a signature): it is reachable
    out["store"] = e.code
print(json.dumps(out))
open("/dev/termination-log", "w").write("probe says goodbye")
sys.exit(3)
"""


def pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "probe"}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {LABEL: "true"},
            "tolerations": [{"key": LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": command}],
            **spec,
        },
    }


def wait_phase(plane: ControlPlane, ns: str, name: str, phases: tuple[str, ...], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        obj = json.loads(plane.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        if obj["status"].get("phase") in phases:
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(plane.kubectl("describe", "pod", name, "-n", ns).stdout)
        time.sleep(0.3)


def test_a_pod_on_the_real_node_reaches_dns_the_api_and_the_store_and_reports_its_end(
    real_node: RealNode, control_plane: ControlPlane, namespace: str, object_store: LoopbackObjectStore
) -> None:
    node = json.loads(control_plane.kubectl("get", "node", real_node.name, "-o", "json").stdout)
    assert {"key": LABEL, "value": "true", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["metadata"]["labels"][LABEL] == "true"
    image = real_node.images["toolkit"]
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probes"},
        "spec": {"clusterIP": "None", "selector": {"app": "probe"}, "ports": [{"port": 80}]},
    }
    target = pod("target", image, ["sleep", "60"], hostname="probe-0", subdomain="probes")
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([headless, target]))
    target_ip = wait_phase(control_plane, namespace, "target", ("Running",))["status"]["podIP"]
    assert target_ip.startswith("10.213.0."), target_ip

    store = real_node.expose(object_store.port)
    probe = pod("probe", image, ["python3", "-c", PROBE, store])
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(probe))
    ended = wait_phase(control_plane, namespace, "probe", ("Succeeded", "Failed"))
    logs = control_plane.kubectl("logs", "probe", "-n", namespace).stdout
    assert ended["spec"]["nodeName"] == real_node.name
    terminated = ended["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (3, "probe says goodbye"), terminated
    seen = json.loads(logs.strip().splitlines()[-1])
    assert seen == {"dns": target_ip, "api_ip": "10.0.0.1", "api": "v1.34.4", "store": 403}, (seen, logs)
    assert store == f"http://{HOST_IP}:{object_store.port}"


def test_pods_that_do_not_ask_for_the_real_node_never_land_there(
    real_node: RealNode, control_plane: ControlPlane, namespace: str
) -> None:
    plain = pod("plain", real_node.images["toolkit"], ["true"])
    del plain["spec"]["tolerations"]
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(plain))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        obj = json.loads(control_plane.kubectl("get", "pod", "plain", "-n", namespace, "-o", "json").stdout)
        assert not obj["spec"].get("nodeName"), obj["spec"]
        time.sleep(0.5)
    conditions = {c["type"]: c for c in obj["status"].get("conditions", [])}
    assert conditions["PodScheduled"]["status"] == "False"
    assert "untolerated taint" in conditions["PodScheduled"]["message"]
