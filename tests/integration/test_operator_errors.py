"""No silent failure: a reconcile that raises shows on the job, is counted, and is retried with backoff.

The error is a real one: a ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) denies every
write of one job's status, so the operator's status patch fails with the API server's 403. The
operator must say so on the job (a Warning Event, once), count it in ti_reconcile_errors_total, keep
retrying with backoff, and carry on by itself once the policy is gone.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.jobs import events, eventually, job, job_manifest, phase_is, pods
from tests.support.operator import Kubelet

pytestmark = pytest.mark.integration

JOB = "frozen"
DENIED = "status writes of this job are denied by the test's admission policy"


def _policy(name: str, namespace: str) -> str:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["training.ti.io"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["UPDATE"],
                        "resources": ["tftrainingjobs/status"],
                    }
                ]
            },
            "validations": [
                {"expression": f"object.metadata.name != '{JOB}'", "message": DENIED, "reason": "Forbidden"}
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return yaml.safe_dump_all([policy, binding])


@pytest.fixture
def frozen_status(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    """The policy and its binding, in force; removed at the end whatever happened."""
    name = f"deny-status-{namespace}"[:63]
    control_plane.kubectl("apply", "-f", "-", input=_policy(name, namespace))
    yield name
    control_plane.kubectl(
        "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, check=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _errors_counted(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('ti_reconcile_errors_total{error="ForbiddenException"}')
    )


def _reconcile_errors(plane: ControlPlane, namespace: str) -> list[dict]:
    return [e for e in events(plane, namespace, JOB) if e["reason"] == "ReconcileError"]


def test_a_reconcile_error_shows_on_the_job_once_is_counted_and_retried_until_it_clears(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, frozen_status: str
) -> None:
    control_plane.kubectl("create", "serviceaccount", "trainer", "-n", namespace)
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job_manifest(JOB)))

    # The policy is in force once the API server denies a (dry-run) status write of the job.
    def denied() -> bool:
        probe = control_plane.kubectl(
            "patch", "tftj", JOB, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Pending"}}), "--dry-run=server", check=False,
        )  # fmt: skip
        return probe.returncode != 0 and DENIED in probe.stderr

    eventually(denied, "the admission policy in force", timeout=30)

    port = _free_port()
    operator = start_operator(TI_OPERATOR_METRICS_PORT=str(port))
    started = time.monotonic()

    # Shown on the job at the first failure: the Event is written before the first retry (after 1 s).
    first = eventually(
        lambda: _reconcile_errors(control_plane, namespace), "a ReconcileError event", timeout=60
    )
    seen_after = time.monotonic() - started
    event = first[0]
    assert event["type"] == "Warning"
    # The client's class for a 403, the status and reason, then the server's message.
    assert event["message"].startswith(
        f'ForbiddenException: 403 Forbidden: tftrainingjobs.training.ti.io "{JOB}"'
    )
    assert f"ValidatingAdmissionPolicy '{frozen_status}'" in event["message"]
    assert DENIED in event["message"]
    assert "retrying in 1s" in event["message"], event["message"]
    for leak in ("HTTP response", "Authorization", "Bearer", "headers", '"kind"'):
        assert leak not in event["message"], event["message"]
    assert event["involvedObject"]["uid"] == job(control_plane, namespace, JOB)["metadata"]["uid"]

    # Retried with backoff (1 s, 2 s, 4 s, ...), counted each time, told once.
    eventually(lambda: _errors_counted(port) >= 3, "three failed reconciles counted", timeout=30)
    assert len(_reconcile_errors(control_plane, namespace)) == 1
    assert "phase" not in (job(control_plane, namespace, JOB).get("status") or {})
    log = operator.log.read_text(errors="replace")
    assert "Traceback" not in log and "HTTP response headers" not in log, log[-3000:]
    assert f"reconcile of {namespace}/{JOB} failed, retrying in 2s" in log, log[-3000:]

    # The error clears: the next try goes through with nothing done by hand.
    control_plane.kubectl(
        "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", frozen_status
    )
    eventually(phase_is(control_plane, namespace, JOB, "Training"), "phase Training once writes are allowed")
    for p in pods(control_plane, namespace, JOB):
        kubelet.finish(p["metadata"]["name"], exit_code=0)
    eventually(phase_is(control_plane, namespace, JOB, "Completed"), "phase Completed")
    assert len(_reconcile_errors(control_plane, namespace)) == 1
    sys.stderr.write(
        f"\n[reconcile error] the ReconcileError event was seen {seen_after:.1f}s after the operator started\n"
    )
