"""Pod Security admission on the real control plane: a namespace that enforces the `restricted`
standard admits a job's pods with a catalog image, and refuses (loudly, on the job) a custom image
whose user the operator cannot vouch for. kwok runs the admitted pods.

The API server's PodSecurity admission plugin is on by default (v1.34); nothing here turns it on.
"""

from __future__ import annotations

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.jobs import apply, condition, eventually, job, job_manifest, pods, running_pods

pytestmark = pytest.mark.integration

FAST = {"TI_RESYNC_SECONDS": "2", "TI_STOP_GRACE_SECONDS": "1"}


@pytest.fixture
def restricted_namespace(control_plane: ControlPlane, namespace: str) -> str:
    control_plane.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return namespace


def test_restricted_namespace_admits_the_pods_of_a_catalog_image_job(
    control_plane: ControlPlane, restricted_namespace: str, start_operator
) -> None:
    ns = restricted_namespace
    start_operator(**FAST)
    # Two workers with GPUs and checkpoints: every container and volume a pod of ours can have.
    apply(
        control_plane,
        ns,
        job_manifest("strict", instanceCount=2, checkpointPath="cos://models-1250000000/ckpt/strict"),
    )
    found = eventually(running_pods(control_plane, ns, "strict", 2, 0), "2 admitted pods running on kwok")
    for pod in found:
        ctx = pod["spec"]["securityContext"]
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"} and ctx["fsGroup"] == 65532
    status = job(control_plane, ns, "strict")["status"]
    assert status.get("reason") != "FailedCreate", status
    created = condition(status, "Created")
    assert created is not None and created["status"] == "True"


def test_restricted_namespace_refuses_a_custom_image_and_the_job_says_why(
    control_plane: ControlPlane, restricted_namespace: str, start_operator
) -> None:
    """The admission is really enforced here: a custom image keeps its own (maybe root) user."""
    ns = restricted_namespace
    start_operator(**FAST)
    apply(control_plane, ns, job_manifest("custom", image="registry.example.com/me/tf:root"))

    def refused() -> dict[str, object] | None:
        status = job(control_plane, ns, "custom").get("status") or {}
        return status if status.get("reason") == "FailedCreate" else None

    status = eventually(refused, "the job to report the refused pod")
    created = condition(status, "Created")
    assert created is not None and created["status"] == "False"
    message = created["message"]
    assert 'violates PodSecurity "restricted:latest"' in message, message
    assert 'container "tensorflow"' in message and "runAsNonRoot" in message
    # Only the training container falls short: the toolkit's containers meet the standard.
    assert 'container "fetch"' not in message and 'container "upload"' not in message
    assert pods(control_plane, ns, "custom") == []
