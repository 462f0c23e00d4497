"""The Helm chart against the real control plane: lint, render, server-side dry runs, the schema's
refusals, and its RBAC applied for real and probed with the chart's own ServiceAccount token.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import rbac_calls
from tests.support.controlplane import ControlPlane
from tests.support.kueue import Kueue
from tests.support.operator import Kubelet, OperatorProcess
from ti import contract
from ti.catalog import load_catalog
from ti.operator.settings import OperatorConfig, Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ti-operator"
CRD = CHART / "crds" / "tftrainingjobs.training.ti.io.yaml"
GROUP = "training.ti.io"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
TWO_WORKERS = REPO / "examples" / "keras-two-workers.yaml"

# A non-default set: namespaced mode, a custom catalog replacing the built-in one, other settings.
CUSTOM_CATALOG = {
    "inheritDefaults": False,
    "instanceTypes": {
        "ACME.CPU.SMALL": {"description": "2 cores", "cpu": 2, "memory": "4Gi"},
        "ACME.A100.X2": {
            "cpu": 16,
            "memory": "120Gi",
            "gpus": 2,
            "gpuResource": "nvidia.com/gpu",
            "gpuModel": "A100",
            "nodeSelector": {"acme.io/gpu": "a100"},
            "tolerations": [{"key": "acme.io/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
    "frameworks": {
        "2.16": {"cpu": "registry.acme.io/tf:2.16-cpu", "gpu": "registry.acme.io/tf:2.16-gpu"},
        "2.17": {"cpu": "registry.acme.io/tf:2.17-cpu", "gpu": "registry.acme.io/tf:2.17-gpu"},
    },
}


# ---- helpers ----------------------------------------------------------------------------------------------


def helm(plane: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(plane.bin / "helm"), *args], capture_output=True, text=True, env=plane.env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def render(plane: ControlPlane, release: str, namespace: str, *args: str) -> str:
    return helm(plane, "template", release, str(CHART), "--namespace", namespace, *args).stdout


def objects(manifest: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def wait_for(what: str, probe: Callable[[], object], timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def unique(request: pytest.FixtureRequest, prefix: str) -> str:
    return f"{prefix}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"


@pytest.fixture(scope="module")
def crd_installed(control_plane: ControlPlane) -> None:
    """The chart's copy of the CRD, installed for real (the dry runs of custom objects need it)."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    # Polled rather than `kubectl wait`, which fails while the new CRD has no conditions yet.
    wait_for(
        "the TFTrainingJob CRD to be Established",
        lambda: control_plane.kubectl(
            "get", f"crd/tftrainingjobs.{GROUP}", "-o",
            'jsonpath={.status.conditions[?(@.type=="Established")].status}', check=False,
        ).stdout == "True",
        timeout=60,
    )  # fmt: skip


@pytest.fixture
def extra_namespaces(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two more namespaces of the test's own: the operator's release namespace and a neighbour."""
    names = [unique(request, "ops"), unique(request, "other")]
    for name in names:
        control_plane.kubectl("create", "namespace", name)
    yield names
    for name in names:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def values_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


# ---- lint and render ------------------------------------------------------------------------------------


def test_helm_lint_strict_passes_with_default_and_custom_values(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    out = helm(control_plane, "lint", "--strict", str(CHART)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    custom = values_file(
        tmp_path, {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["a", "b"], "config": CUSTOM_CATALOG}
    )
    out = helm(control_plane, "lint", "--strict", str(CHART), "--values", custom).stdout
    assert "0 chart(s) failed" in out


def test_default_values_render_and_pass_a_server_side_dry_run(
    control_plane: ControlPlane, crd_installed: None, namespace: str
) -> None:
    manifest = render(control_plane, "ti", namespace)
    docs = objects(manifest)
    assert sorted(d["kind"] for d in docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    applied = control_plane.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=manifest)
    result = json.loads(applied.stdout)
    items = result["items"] if result.get("kind") == "List" else [result]
    deployment = find(items, "Deployment")

    # What the API server kept (and defaulted) is what the issue asks for.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["kopf"]
    assert container["args"][:4] == ["run", "/app/operator/handlers.py", "--standalone", "--all-namespaces"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health", "scheme": "HTTP"}
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/ti-operator": "config", "/tmp": "tmp"}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]

    service = find(items, "Service")
    assert service["spec"]["ports"][0]["port"] == 9090
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]

    # The settings the operator reads from its environment are the chart's values.
    env = {e["name"]: e.get("value", "") for e in container["env"] if "value" in e}
    config = OperatorConfig.from_env(env)
    assert config.toolkit_image == "ghcr.io/ti-operator/ti-operator:0.1.0"
    assert config.storage_secret == "ti-cos-credentials"
    assert config.cos_region == "ap-guangzhou"
    assert env["TI_CATALOG_FILE"] == "/etc/ti-operator/catalog.yaml"
    assert Settings.from_env(env).workers == 8


def test_custom_values_render_namespaced_rbac_and_a_catalog_the_operator_loads(
    control_plane: ControlPlane,
    crd_installed: None,
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
) -> None:
    ops, other = extra_namespaces
    custom = {
        "fullnameOverride": "acme-ti",
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": [namespace, other],
        "image": {"repository": "registry.acme.io/ti-operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "config": {
            **CUSTOM_CATALOG,
            "toolkitImage": "registry.acme.io/ti-toolkit:1.2.3",
            "imagePullPolicy": "Always",
            "defaultStorageSecret": "acme-cos",
            "cos": {"region": "ap-shanghai", "endpoint": "http://10.96.0.50:9000"},
            "stopGraceSeconds": 120,
        },
        "operator": {"logFormat": "json", "verbose": True, "workers": 3, "qps": 20, "burst": 30},
        "metrics": {"port": 9191},
        "resources": {
            "requests": {"cpu": "200m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
    }
    manifest = render(control_plane, "acme", ops, "--values", values_file(tmp_path, custom))
    docs = objects(manifest)
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted([namespace, other])
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"] == ["acme-ti-discovery"]
    discovery = find(docs, "ClusterRole")
    assert discovery["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["kueue.x-k8s.io"], "resources": ["resourceflavors"], "verbs": ["list"]},
        {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloadpriorityclasses"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "acme-ti", "namespace": ops}]

    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.acme.io/ti-operator:1.2.3"
    assert f"--namespace={namespace}" in container["args"] and f"--namespace={other}" in container["args"]
    assert "--all-namespaces" not in container["args"]
    assert "--log-format=json" in container["args"] and "--verbose" in container["args"]

    # The ConfigMap's catalog is one the operator's own loader accepts, and it is the custom one.
    configmap = find(docs, "ConfigMap")
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(configmap["data"]["catalog.yaml"])
    catalog = load_catalog(catalog_file)
    assert sorted(catalog.instance_types) == ["ACME.A100.X2", "ACME.CPU.SMALL"]
    a100 = catalog.instance_type("ACME.A100.X2")
    assert (a100.gpus, a100.node_selector) == (2, {"acme.io/gpu": "a100"})
    assert catalog.framework_image("2.17", gpu=True) == "registry.acme.io/tf:2.17-gpu"
    assert catalog.toolkit_image == "registry.acme.io/ti-toolkit:1.2.3"
    assert sorted(configmap["data"]) == ["catalog.yaml"], "the settings travel as env, the catalog as a file"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = OperatorConfig.from_env(env)
    assert (config.toolkit_image, config.image_pull_policy) == ("registry.acme.io/ti-toolkit:1.2.3", "Always")
    assert (config.storage_secret, config.cos_endpoint) == ("acme-cos", "http://10.96.0.50:9000")
    assert config.stop_grace_seconds == 120
    settings = Settings.from_env(env)
    assert (settings.workers, settings.qps, settings.client_burst, settings.metrics_port) == (3, 20, 30, 9191)

    applied = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest).stdout
    for line in (
        "role.rbac.authorization.k8s.io/acme-ti created (server dry run)",
        "clusterrole.rbac.authorization.k8s.io/acme-ti-discovery created (server dry run)",
        "deployment.apps/acme-ti created (server dry run)",
        "configmap/acme-ti-config created (server dry run)",
    ):
        assert line in applied, applied


def test_service_monitor_is_rendered_only_when_enabled(control_plane: ControlPlane) -> None:
    assert "ServiceMonitor" not in render(control_plane, "ti", "ops")
    docs = objects(
        render(
            control_plane,
            "ti",
            "ops",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prometheus",
        )
    )
    monitor = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    service = find(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        (["--set", "rbac.scope=everywhere"], ["/rbac/scope", "'cluster', 'namespaced'"]),
        (["--set", "metrics.port=99999"], ["/metrics/port", "65,535"]),
        (["--set", "image.pullPolicy=Sometimes"], ["/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"]),
        (["--set", "watchNamespaces={Team_A}"], ["/watchNamespaces/0", "does not match pattern"]),
        (["--set", "replicaCount=3"], ["additional properties 'replicaCount' not allowed"]),
        (
            ["--set-json", 'config.instanceTypes.X={"cpu":4,"memory":"lots"}'],
            ["/config/instanceTypes/X/memory", "'lots' does not match pattern"],
        ),
        (
            ["--set-json", 'config.instanceTypes.X={"cpu":0,"memory":"4Gi"}'],
            ["/config/instanceTypes/X/cpu", "0"],
        ),
        (
            ["--set-json", 'config.frameworks={"2.17":{"cpu":"tensorflow/tensorflow:2.17.0"}}'],
            ["/config/frameworks/2.17", "missing property 'gpu'"],
        ),
        (
            ["--set-json", 'config.frameworks={"latest":{"cpu":"a","gpu":"b"}}'],
            ["invalid propertyName 'latest'"],
        ),
        (
            ["--set", "watchNamespaces={team-a}"],
            ["watchNamespaces (team-a) is only used with rbac.scope=namespaced"],
        ),
    ],
    ids=[
        "scope",
        "port",
        "pullPolicy",
        "namespace-name",
        "unknown-key",
        "memory",
        "cpu",
        "framework-images",
        "framework-version",
        "cluster-with-namespaces",
    ],
)
def test_wrong_values_are_refused_with_a_message_that_names_them(
    control_plane: ControlPlane, args: list[str], messages: list[str]
) -> None:
    proc = helm(control_plane, "template", "ti", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"helm accepted {args}"
    for message in messages:
        assert message in proc.stderr, proc.stderr


# ---- RBAC, for real ---------------------------------------------------------------------------------------


@dataclass
class Identity:
    """The chart's ServiceAccount, as the operator would be: its own token in its own kubeconfig."""

    plane: ControlPlane
    kubeconfig: Path
    subject: str

    def can(self, verb: str, resource: str, namespace: str | None = None, *extra: str) -> bool:
        where = ["--all-namespaces"] if namespace is None else ["--namespace", namespace]
        if "/" in resource:  # kubectl reads "pods/exec" as the pod named exec: ask for the subresource
            resource, subresource = resource.split("/")
            extra = (*extra, f"--subresource={subresource}")
        proc = subprocess.run(
            [
                str(self.plane.bin / "kubectl"),
                "--kubeconfig",
                str(self.kubeconfig),
                "auth",
                "can-i",
                verb,
                resource,
                *where,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.stdout.strip() in ("yes", "no"), proc.stdout + proc.stderr
        return proc.stdout.strip() == "yes"

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.plane.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )


def install_for_real(
    plane: ControlPlane,
    request: pytest.FixtureRequest,
    release_ns: str,
    watched: str,
    tmp_path: Path,
    *args: str,
) -> tuple[str, Identity]:
    """Apply the rendered chart (RBAC, ServiceAccount, ...) and return a kubeconfig holding its token,
    once the API server's authorizer has caught up with the new bindings (in `watched`)."""
    fullname = unique(request, "ti")
    manifest = render(plane, "ti", release_ns, "--set", f"fullnameOverride={fullname}", *args)
    plane.kubectl("apply", "-f", "-", input=manifest)
    request.addfinalizer(
        lambda: plane.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=manifest, check=False
        )
    )
    token = plane.kubectl("create", "token", fullname, "-n", release_ns, "--duration=1h").stdout.strip()
    kubeconfig = plane.kubeconfig_for_token(token, tmp_path / "operator.kubeconfig", namespace=release_ns)
    identity = Identity(plane, kubeconfig, f"system:serviceaccount:{release_ns}:{fullname}")
    whoami = identity.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == identity.subject, whoami.stderr
    wait_for(
        f"{identity.subject}'s bindings to take effect",
        lambda: (
            identity.can("watch", "pods", watched)
            and identity.can("watch", "customresourcedefinitions.apiextensions.k8s.io")
        ),
        timeout=30,
    )
    return manifest, identity


def kubectl_resource(group: str, resource: str) -> str:
    name, _, sub = resource.partition("/")
    return (f"{name}.{group}" if group else name) + (f"/{sub}" if sub else "")


# What the operator does in every namespace it works in, derived from its code and kopf's registry.
NEEDED = sorted((verb, kubectl_resource(group, resource)) for group, resource, verb in rbac_calls.needed())
# What it must never do: read credentials, change what it does not own, or grant itself more.
FORBIDDEN = [
    # granted once, never used: kopf patches nothing with event handlers only; Services are deleted by
    # the garbage collector; Events are only created, in core/v1. (Pods are read one at a time, and
    # Services listed and watched, by the controller's watch caches: those are NEEDED now.)
    ("patch", f"tftrainingjobs.{GROUP}"),
    ("update", f"tftrainingjobs.{GROUP}"),
    ("get", f"tftrainingjobs.{GROUP}/status"),
    ("update", f"tftrainingjobs.{GROUP}/status"),
    ("patch", "pods"),
    ("delete", "services"),
    ("patch", "events"),
    ("create", "events.events.k8s.io"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", f"tftrainingjobs.{GROUP}"),
    ("update", "pods"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("update", "services"),
    ("patch", "services"),
    ("get", "configmaps"),
    ("create", "configmaps"),
    ("create", "serviceaccounts/token"),
    ("list", "serviceaccounts"),
    ("create", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("create", "jobs.batch"),
    ("create", "persistentvolumeclaims"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
    ("delete", "events"),
    ("delete", "namespaces"),
]
assert not set(FORBIDDEN) & set(NEEDED), f"needed and forbidden at once: {set(FORBIDDEN) & set(NEEDED)}"
CLUSTER_FORBIDDEN = [
    ("get", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "namespaces"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("patch", "nodes"),
    ("list", "nodes"),
    ("create", "namespaces"),
    ("create", "certificatesigningrequests.certificates.k8s.io"),
]


def test_rbac_namespaced_mode_for_real(
    control_plane: ControlPlane,
    crd_installed: None,
    kueue: Kueue,  # its CRDs: kubectl auth can-i resolves workloads.kueue.x-k8s.io through discovery
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    ops, other = extra_namespaces
    watched = namespace
    _, sa = install_for_real(
        control_plane, request, ops, watched, tmp_path, "--set", "rbac.scope=namespaced",
        "--set", f"watchNamespaces={{{watched}}}",
    )  # fmt: skip

    missing = [(v, r) for v, r in NEEDED if not sa.can(v, r, watched)]
    assert missing == [], f"{sa.subject} lacks what the operator needs in {watched}"
    # kopf's cluster-wide needs: following CRDs and the watched namespaces, read-only.
    for verb in ("list", "watch"):
        assert sa.can(verb, "customresourcedefinitions.apiextensions.k8s.io")
        assert sa.can(verb, "namespaces")
    # Kueue's flavors and priority classes, read-only.
    for group, resource, verb in sorted(rbac_calls.cluster_wide()):
        assert sa.can(verb, kubectl_resource(group, resource)), (verb, resource)

    allowed = [(v, r) for v, r in FORBIDDEN if sa.can(v, r, watched)]
    assert allowed == [], f"{sa.subject} may do more than it needs in {watched}"
    allowed = [(v, r) for v, r in CLUSTER_FORBIDDEN if sa.can(v, r)]
    assert allowed == [], f"{sa.subject} may change cluster-scoped objects"
    # Nothing at all outside the watched namespace: not its neighbour, not even its own namespace.
    for ns in (other, ops):
        leaked = [(v, r) for v, r in NEEDED if sa.can(v, r, ns)]
        assert leaked == [], f"{sa.subject} reaches into {ns}"
    assert not sa.can("list", f"tftrainingjobs.{GROUP}"), "no cluster-wide list in namespaced mode"
    assert not sa.can("list", "pods"), "no cluster-wide list in namespaced mode"

    # The same with real requests, not only the authorizer's answers.
    control_plane.kubectl(
        "create", "secret", "generic", "cos", "-n", watched, "--from-literal=TENCENTCLOUD_SECRETKEY=s3cr3t"
    )
    denied = sa.kubectl("get", "secret", "cos", "-n", watched, "-o", "yaml")
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and "s3cr3t" not in denied.stdout
    assert sa.kubectl("get", f"tftrainingjobs.{GROUP}", "-n", watched).returncode == 0
    denied = sa.kubectl("get", "pods", "-n", other)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    created = sa.kubectl(
        "run", "probe", "-n", watched, "--image=busybox", "--restart=Never", "--dry-run=server", "-o", "name"
    )
    assert created.returncode == 0, created.stderr


def test_rbac_cluster_mode_for_real(
    control_plane: ControlPlane,
    crd_installed: None,
    kueue: Kueue,  # its CRDs: kubectl auth can-i resolves workloads.kueue.x-k8s.io through discovery
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    ops, other = extra_namespaces
    _, sa = install_for_real(control_plane, request, ops, namespace, tmp_path)

    for ns in (namespace, other):
        missing = [(v, r) for v, r in NEEDED if not sa.can(v, r, ns)]
        assert missing == [], f"{sa.subject} lacks what the operator needs in {ns}"
        allowed = [(v, r) for v, r in FORBIDDEN if sa.can(v, r, ns)]
        assert allowed == [], f"{sa.subject} may do more than it needs in {ns}"
    for verb in ("list", "watch"):
        assert sa.can(verb, f"tftrainingjobs.{GROUP}"), "cluster-wide, across namespaces"
        assert sa.can(verb, "pods"), "cluster-wide, across namespaces"
        assert sa.can(verb, "customresourcedefinitions.apiextensions.k8s.io")
    for group, resource, verb in sorted(rbac_calls.cluster_wide()):  # Kueue's flavors, priority classes
        assert sa.can(verb, kubectl_resource(group, resource)), (verb, resource)
    # kopf --all-namespaces never looks at namespaces (kopf/_core/reactor/observation.py).
    assert not sa.can("list", "namespaces")
    assert not sa.can("get", "secrets"), "no Secret anywhere"
    allowed = [(v, r) for v, r in CLUSTER_FORBIDDEN if sa.can(v, r)]
    assert allowed == [], f"{sa.subject} may change cluster-scoped objects"

    listed = sa.kubectl("get", f"tftrainingjobs.{GROUP}", "--all-namespaces")
    assert listed.returncode == 0, listed.stderr
    denied = sa.kubectl("get", "secrets", "--all-namespaces")
    assert denied.returncode != 0 and "Forbidden" in denied.stderr


# ---- examples and the operator under the chart's identity ------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_manifest_is_accepted_by_the_api_server(
    control_plane: ControlPlane, crd_installed: None, namespace: str, path: Path
) -> None:
    out = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path)).stdout
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    assert out.strip() == f"tftrainingjob.{GROUP}/{name} created (server dry run)"


def test_operator_with_the_charts_namespaced_identity_runs_the_two_worker_example_to_completion(
    control_plane: ControlPlane,
    crd_installed: None,
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
) -> None:
    """The operator, authenticated only by the chart's ServiceAccount token (namespaced mode) and
    configured exactly as the chart's Deployment configures it, takes a 2-instance job to Completed."""
    ops, _ = extra_namespaces
    manifest, sa = install_for_real(
        control_plane, request, ops, namespace, tmp_path, "--set", "rbac.scope=namespaced",
        "--set", f"watchNamespaces={{{namespace}}}",
    )  # fmt: skip
    docs = objects(manifest)
    configmap = find(docs, "ConfigMap")
    (tmp_path / "catalog.yaml").write_text(configmap["data"]["catalog.yaml"])
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {
        "TI_CATALOG_FILE": str(tmp_path / "catalog.yaml"),
        "TI_OPERATOR_METRICS_PORT": "0",
        "TI_STOP_GRACE_SECONDS": "1",
    }
    operator = start_operator(kubeconfig=sa.kubeconfig, **env)

    job = yaml.safe_load(TWO_WORKERS.read_text())
    name = job["metadata"]["name"]
    control_plane.kubectl("apply", "-n", namespace, "-f", str(TWO_WORKERS))
    pods = [contract.instance_name(name, contract.ROLE_WORKER, i) for i in range(2)]

    def pods_exist() -> bool:
        got = control_plane.kubectl("get", "pods", "-n", namespace, "-o", "name", check=False).stdout.split()
        return all(f"pod/{p}" in got for p in pods)

    wait_for(f"the operator ({sa.subject}) to create {pods}", pods_exist)
    assert operator.alive(), operator.tail()
    service = control_plane.kubectl("get", "service", name, "-n", namespace, "-o", "json")
    assert json.loads(service.stdout)["spec"]["clusterIP"] == "None", "a headless Service for TF_CONFIG"
    pod = kubelet.pod(pods[0])
    assert pod["spec"]["serviceAccountName"] == "default"
    assert pod["spec"]["containers"][1]["image"] == env["TI_TOOLKIT_IMAGE"]

    for p in pods:
        kubelet.finish(p, exit_code=0)

    def phase() -> str:
        return control_plane.kubectl(
            "get", f"tftrainingjobs.{GROUP}", name, "-n", namespace, "-o", "jsonpath={.status.phase}"
        ).stdout

    wait_for(f"{name} to complete (phase now {phase()!r})", lambda: phase() == "Completed")
    status = json.loads(
        control_plane.kubectl("get", f"tftrainingjobs.{GROUP}", name, "-n", namespace, "-o", "json").stdout
    )["status"]
    assert status["modelArtifacts"] == contract.model_uri(job["spec"]["outputPath"], name)
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    assert json.loads(events.stdout)["items"], "the operator recorded Events on the job"
    log = operator.log.read_text(errors="replace")
    assert "Forbidden" not in log and "403" not in log, operator.tail()
