"""What the Kueue fixture makes of the manifests hack/toolchain.sh copied from Kueue's module: a Kueue
bump that renames a webhook or changes which CRDs convert fails here, not in a Kueue that never answers."""

from __future__ import annotations

import pytest

from tests.support import kueue

pytestmark = pytest.mark.unit

URL = "https://127.0.0.1:1"


def test_only_kueue_api_and_batch_job_webhooks_are_kept_and_each_calls_loopback() -> None:
    configs = kueue.webhook_configurations(kueue.manifests_dir() / "webhook" / "manifests.yaml", URL, "Q0E=")
    assert {c["kind"] for c in configs} == {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    assert all(c["metadata"]["name"].startswith(kueue.WEBHOOK_PREFIX) for c in configs)
    hooks = {h["name"]: h for c in configs for h in c["webhooks"]}
    assert {
        "mjob.kb.io",
        "vjob.kb.io",
        "vresourceflavor.kb.io",
        "vclusterqueue.kb.io",
        "vworkload.kb.io",
    } <= set(hooks)
    assert not {"mpod.kb.io", "vpod.kb.io", "mdeployment.kb.io", "vtfjob.kb.io"} & set(hooks)
    assert hooks["mjob.kb.io"]["clientConfig"] == {"url": f"{URL}/mutate-batch-v1-job", "caBundle": "Q0E="}
    for h in hooks.values():
        assert h["clientConfig"]["url"].startswith(f"{URL}/"), h["name"]
        assert "service" not in h["clientConfig"]
        assert h["failurePolicy"] == "Fail" and h["sideEffects"] == "None"


def test_the_crds_kueue_converts_call_its_convert_endpoint() -> None:
    crds = {c["metadata"]["name"]: c for c in kueue.crds(kueue.manifests_dir() / "crd", URL, "Q0E=")}
    assert "resourceflavors.kueue.x-k8s.io" in crds and "workloads.kueue.x-k8s.io" in crds
    converted = {n for n, c in crds.items() if c["spec"].get("conversion", {}).get("strategy") == "Webhook"}
    assert {
        "workloads.kueue.x-k8s.io",
        "clusterqueues.kueue.x-k8s.io",
        "localqueues.kueue.x-k8s.io",
    } <= converted
    assert "resourceflavors.kueue.x-k8s.io" not in converted
    for n in converted:
        assert crds[n]["spec"]["conversion"]["webhook"]["clientConfig"]["url"] == f"{URL}/convert"
    # The fixture speaks v1beta2: every CRD serves it and stores it.
    for n, c in crds.items():
        stored = [v["name"] for v in c["spec"]["versions"] if v.get("storage")]
        assert stored == ["v1beta2"], (n, stored)


def test_zero_quantities_are_left_out_of_usage() -> None:
    got = kueue._flavor_quantities(
        [
            {"name": "a", "resources": [{"name": "cpu", "total": "0"}, {"name": "memory", "total": "1Gi"}]},
            {"name": "b", "resources": [{"name": "cpu", "total": "0m"}, {"name": "memory", "total": "0Gi"}]},
            {"name": "c", "resources": [{"name": "cpu", "total": "500m", "borrowed": "0"}]},
        ]
    )
    assert got == {"a": {"memory": "1Gi"}, "c": {"cpu": "500m"}}


def test_the_gpu_flavor_selects_only_gpu_nodes_and_tolerates_their_taint() -> None:
    cpu, gpu = kueue.FLAVOR_LABELS[kueue.FLAVOR_CPU], kueue.FLAVOR_LABELS[kueue.FLAVOR_GPU]
    assert gpu["nvidia.com/gpu.present"] == "true"
    assert cpu[kueue.POOL_LABEL] != gpu[kueue.POOL_LABEL]
    assert {p for n, p in kueue.NODE_POOLS.items() if n.startswith("kwok-gpu-")} == {gpu[kueue.POOL_LABEL]}
    flavors = {f["metadata"]["name"]: f["spec"] for f in kueue.resource_flavors()}
    assert flavors[kueue.FLAVOR_GPU]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "tolerations" not in flavors[kueue.FLAVOR_CPU]
