"""A real Kueue controller in the test plane (tests/support/controlplane.py), one per test run.

Fixture `kueue` (session scope) starts the binary hack/toolchain.sh built (KUEUE_VERSION in
hack/versions.env) against the plane, as its admin:
- Kueue's CRDs (copied from its Go module next to the binaries) applied server-side, their conversion
  webhooks (those Kueue's kustomization enables) pointed at this Kueue; namespace `kueue-system`;
- a CA of its own and a serving certificate for 127.0.0.1; the webhooks of manifests.yaml for
  kueue.x-k8s.io resources and batch/v1 Jobs, installed as `ti-test-kueue-*` webhook configurations that
  call `https://127.0.0.1:<port><path>` (no Service: the API server runs on this host);
- a Configuration (config.kueue.x-k8s.io/v1beta2, `KueueProcess.configuration`): leader election off,
  health, metrics and webhook servers on free loopback ports, internal cert management off,
  integrations `batch/job` plus the external framework TFTrainingJob.v1alpha1.training.ti.io, no
  waitForPodsReady, manageJobsWithoutQueueName false (a Job without the queue label is left alone);
  `--feature-gates=VisibilityOnDemand=false`, since the visibility API server would listen on a
  fixed port (8082) of every address;
- two ResourceFlavors: FLAVOR_CPU (`ti.io/pool: cpu`, which the fixture puts on kwok-cpu-0/1) and
  FLAVOR_GPU (`nvidia.com/gpu.present: "true"`, `ti.io/pool: gpu` on kwok-gpu-0/1, and a toleration of
  the `nvidia.com/gpu` NoSchedule taint).

With internal cert management off, Kueue reads its metrics server's certificate from the fixed path
/etc/kueue/metrics/certs and exits when it is not there. So Kueue runs in a mount namespace of its own
(`unshare --mount`, needs root, as the real node does) in which that path is a bind mount of the
fixture's certificate folder: two runs on one machine never share it, and nothing is written under
/etc but the empty mount point.

Quota comes back when a Workload is gone. Kueue only drops its finalizer when the owner (a Job) is
deleted; the kube-controller-manager's garbage collector deletes the Workload, and in a fresh plane it
only watches the new Workload CRD after its next discovery resync (every 30s): the first owner deleted
in a session may release its quota some 20s later, later ones at once.

The `Kueue` handle gives tests `version`, `queue(namespace, quotas=...)` (a ClusterQueue named after
the namespace and a LocalQueue in it, see `Queue`), `priority_class(name, value)` and
`workloads(namespace)`. Teardown deletes the ClusterQueues it made, removes the webhook
configurations and stops Kueue; its log is in the plane's logs folder, kept in test-logs/controlplane/
when a test failed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import (
    GPU_LABEL,
    GPU_RESOURCE,
    REPO,
    Component,
    ControlPlane,
    free_port,
    toolchain_bin,
)
from tests.support.pki import write_serving

NAMESPACE = "kueue-system"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
API = "kueue.x-k8s.io/v1beta2"
EXTERNAL_FRAMEWORK = "TFTrainingJob.v1alpha1.training.ti.io"
FEATURE_GATES = "VisibilityOnDemand=false"
METRICS_CERT_PATH = "/etc/kueue/metrics/certs"  # cmd/kueue/main.go, when internalCertManagement is off
WEBHOOK_PREFIX = "ti-test-kueue-"
FIELD_MANAGER = "ti-test-kueue"

POOL_LABEL = "ti.io/pool"
FLAVOR_CPU = "cpu-nodes"
FLAVOR_GPU = "gpu-nodes"
FLAVOR_LABELS: dict[str, dict[str, str]] = {
    FLAVOR_CPU: {POOL_LABEL: "cpu"},
    FLAVOR_GPU: {GPU_LABEL: "true", POOL_LABEL: "gpu"},
}
FLAVOR_TOLERATIONS: dict[str, list[dict[str, str]]] = {
    FLAVOR_CPU: [],
    FLAVOR_GPU: [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
}
NODE_POOLS = {"kwok-cpu-0": "cpu", "kwok-cpu-1": "cpu", "kwok-gpu-0": "gpu", "kwok-gpu-1": "gpu"}
# One resource group: every ClusterQueue that queue() makes covers these, in this order.
RESOURCES = ("cpu", "memory", GPU_RESOURCE)


def kueue_version() -> str:
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("KUEUE_VERSION="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError("hack/versions.env pins no KUEUE_VERSION")


def manifests_dir(version: str | None = None) -> Path:
    """Where hack/toolchain.sh copied Kueue's CRDs and webhook manifests (next to the bin folder)."""
    return toolchain_bin().parent / f"kueue-{version or kueue_version()}"


def _is_zero(quantity: str) -> bool:
    return re.fullmatch(r"[+-]?0*(\.0*)?([a-zA-Z]+|[eE][+-]?\d+)?", str(quantity).strip()) is not None


def _flavor_quantities(entries: list[dict[str, Any]] | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for flavor in entries or []:
        used = {
            r["name"]: str(r["total"])
            for r in flavor.get("resources", [])
            if not _is_zero(r.get("total", "0"))
        }
        if used:
            out[flavor["name"]] = used
    return out


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind:
            return dict(c)
    return None


# ---- manifests ------------------------------------------------------------------------------------


def _kept_webhook(hook: dict[str, Any]) -> bool:
    """Webhooks of Kueue's own API, and of batch/v1 Jobs (the one built-in integration enabled)."""
    rules = hook.get("rules", [])
    return bool(rules) and all(
        set(r.get("apiGroups", [])) == {"kueue.x-k8s.io"}
        or (
            r.get("apiGroups") == ["batch"]
            and r.get("apiVersions") == ["v1"]
            and r.get("resources") == ["jobs"]
        )
        for r in rules
    )


def webhook_configurations(manifests: Path, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """manifests.yaml's configurations, kept to `_kept_webhook`, each service turned into `url` + path."""
    out = []
    for doc in yaml.safe_load_all(manifests.read_text()):
        if not doc:
            continue
        hooks = []
        for hook in doc.get("webhooks", []):
            if not _kept_webhook(hook):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook = {**hook, "clientConfig": {"url": f"{url}{path}", "caBundle": ca_bundle}}
            hooks.append(hook)
        doc["metadata"] = {"name": WEBHOOK_PREFIX + doc["metadata"]["name"]}
        doc["webhooks"] = hooks
        out.append(doc)
    return out


def crds(crd_dir: Path, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """The CRDs of crd/bases, with the conversion webhook that Kueue's kustomization enables (its
    webhook_in_* patches) pointed at `url`/convert."""
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    converted = set()
    for patch in kustomization.get("patches", []) or []:
        path = patch.get("path", "") if isinstance(patch, dict) else ""
        if Path(path).name.startswith("webhook_in_"):
            converted.add(yaml.safe_load((crd_dir / path).read_text())["metadata"]["name"])
    out = []
    for f in sorted((crd_dir / "bases").glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        if crd["metadata"]["name"] in converted:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"url": f"{url}/convert", "caBundle": ca_bundle},
                    "conversionReviewVersions": ["v1"],
                },
            }
        out.append(crd)
    return out


def resource_flavors() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API,
            "kind": "ResourceFlavor",
            "metadata": {"name": name},
            "spec": {
                "nodeLabels": labels,
                **({"tolerations": FLAVOR_TOLERATIONS[name]} if FLAVOR_TOLERATIONS[name] else {}),
            },
        }
        for name, labels in FLAVOR_LABELS.items()
    ]


# ---- handles --------------------------------------------------------------------------------------


@dataclass
class Queue:
    """A ClusterQueue (named after the namespace) and a LocalQueue `name` in the namespace pointing at it."""

    kueue: Kueue
    name: str
    cluster_queue: str
    namespace: str

    def _cluster_queue(self) -> dict[str, Any]:
        out = self.kueue.plane.kubectl(
            "get", "clusterqueues.kueue.x-k8s.io", self.cluster_queue, "-o", "json"
        )
        return dict(json.loads(out.stdout))

    def usage(self) -> dict[str, dict[str, str]]:
        """flavor -> resource -> quantity admitted workloads use (status.flavorsUsage), non-zero only."""
        return _flavor_quantities(self._cluster_queue().get("status", {}).get("flavorsUsage"))

    def reserved(self) -> dict[str, dict[str, str]]:
        """The same for workloads holding quota (status.flavorsReservation)."""
        return _flavor_quantities(self._cluster_queue().get("status", {}).get("flavorsReservation"))

    def pending_workloads(self) -> int:
        return int(self._cluster_queue().get("status", {}).get("pendingWorkloads", 0))

    def admitted_workloads(self) -> int:
        return int(self._cluster_queue().get("status", {}).get("admittedWorkloads", 0))

    def local_queue_manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": API,
            "kind": "LocalQueue",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"clusterQueue": self.cluster_queue},
        }

    def create_local_queue(self) -> None:
        self.kueue.apply(self.local_queue_manifest())
        self.kueue.wait_active("localqueues.kueue.x-k8s.io", self.name, self.namespace)

    def delete_local_queue(self) -> None:
        self.kueue.plane.kubectl(
            "delete", "localqueues.kueue.x-k8s.io", self.name, "-n", self.namespace, "--ignore-not-found"
        )

    def delete(self) -> None:
        """LocalQueue, then ClusterQueue (not waited for: Kueue keeps it while workloads still use it)."""
        self.delete_local_queue()
        self.kueue.plane.kubectl(
            "delete", "clusterqueues.kueue.x-k8s.io", self.cluster_queue, "--ignore-not-found", "--wait=false"
        )
        with contextlib.suppress(ValueError):
            self.kueue.queues.remove(self)


@dataclass
class Kueue:
    plane: ControlPlane
    workdir: Path
    version: str = field(default_factory=kueue_version)
    ports: dict[str, int] = field(default_factory=dict)
    component: Component | None = None
    queues: list[Queue] = field(default_factory=list)
    startup_seconds: float = 0.0
    # The folders of METRICS_CERT_PATH that the mount made on the host (a mkdir is not namespaced):
    # removed again when Kueue stops.
    made: list[Path] = field(default_factory=list)

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    @property
    def config_file(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['webhook']}"

    @property
    def log(self) -> Path:
        return self.plane.logs / "kueue.log"

    # -- API the tests use ---------------------------------------------------------------------------

    def queue(
        self,
        namespace: str,
        *,
        quotas: dict[str, dict[str, str]],
        name: str = "main",
        preemption: bool = True,
    ) -> Queue:
        """A ClusterQueue named `namespace` admitting only that namespace's workloads, one flavor entry per
        key of `quotas` (in order; each lists cpu, memory and nvidia.com/gpu, a missing one at "0"), and a
        LocalQueue `name` in the namespace; returns when both report Active."""
        flavors = []
        for flavor, quota in quotas.items():
            unknown = set(quota) - set(RESOURCES)
            if unknown:
                raise ValueError(f"quotas[{flavor!r}] names resources outside {RESOURCES}: {sorted(unknown)}")
            flavors.append(
                {
                    "name": flavor,
                    "resources": [{"name": r, "nominalQuota": str(quota.get(r, "0"))} for r in RESOURCES],
                }
            )
        spec: dict[str, Any] = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "resourceGroups": [{"coveredResources": list(RESOURCES), "flavors": flavors}],
        }
        if preemption:
            spec["preemption"] = {"withinClusterQueue": "LowerPriority"}
        self.apply({"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": namespace}, "spec": spec})
        q = Queue(kueue=self, name=name, cluster_queue=namespace, namespace=namespace)
        self.queues.append(q)
        self.wait_active("clusterqueues.kueue.x-k8s.io", namespace)
        q.create_local_queue()
        return q

    def priority_class(self, name: str, value: int) -> None:
        """A WorkloadPriorityClass (jobs name it with the kueue.x-k8s.io/priority-class label)."""
        self.apply(
            {"apiVersion": API, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}
        )

    def workloads(self, namespace: str) -> list[dict[str, Any]]:
        out = self.plane.kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace, "-o", "json")
        return list(json.loads(out.stdout)["items"])

    # -- helpers -------------------------------------------------------------------------------------

    def apply(self, *objs: dict[str, Any]) -> None:
        self.plane.kubectl(
            "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump_all(objs),
        )  # fmt: skip

    def wait_active(
        self, resource: str, name: str, namespace: str | None = None, timeout: float = 30
    ) -> None:
        where = ["-n", namespace] if namespace else []
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            out = self.plane.kubectl("get", resource, name, *where, "-o", "json", check=False)
            if out.returncode == 0:
                last = _condition(json.loads(out.stdout), "Active")
                if last and last.get("status") == "True":
                    return
            time.sleep(0.2)
        raise AssertionError(f"{resource} {name} not Active within {timeout}s; its Active condition: {last}")

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        began = time.monotonic()
        binary = self.plane.bin / "kueue"
        manifests = manifests_dir(self.version)
        if not binary.exists() or not (manifests / "webhook" / "manifests.yaml").exists():
            raise RuntimeError(
                f"kueue {self.version} is missing ({binary}, {manifests}): run `make toolchain` "
                "(hack/toolchain.sh) to build it and copy its manifests"
            )
        self.workdir.mkdir(parents=True)
        write_serving(self.certs, "ti-test-kueue-ca", "kueue-webhook", ["localhost"], ["127.0.0.1"])
        ca_bundle = base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()
        self.ports = {n: free_port() for n in ("webhook", "health", "metrics")}

        p = self.plane
        p.kubectl(
            "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump_all(crds(manifests / "crd", self.webhook_url, ca_bundle)),
        )  # fmt: skip
        p.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in self._crd_names())
        )
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        self.config_file.write_text(yaml.safe_dump(self.configuration()))

        # Kueue reads the metrics certificate from a fixed path: a private bind mount of our certs there.
        self.made = [
            d
            for d in (*reversed(Path(METRICS_CERT_PATH).parents[:-2]), Path(METRICS_CERT_PATH))
            if not d.exists()
        ]
        script = f'mkdir -p {METRICS_CERT_PATH} && mount --bind "$0" {METRICS_CERT_PATH} && exec "$@"'
        # The admin kubeconfig: ctrl.GetConfigOrDie reads $KUBECONFIG. env, unshare and sh each exec the
        # next, so the process Component starts (and kills with the test runner) is Kueue itself.
        argv = [
            "env", f"KUBECONFIG={p.kubeconfig}",
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", script, str(self.certs),
            str(binary), f"--config={self.config_file}", f"--feature-gates={FEATURE_GATES}",
        ]  # fmt: skip
        self.component = Component("kueue", argv, self.log)
        self.component.start()
        self._wait(self._healthy, "kueue /readyz", timeout=90)
        p.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(webhook_configurations(
            manifests / "webhook" / "manifests.yaml", self.webhook_url, ca_bundle)))  # fmt: skip
        self._wait(self._webhooks_answer, "kueue's webhooks (a dry-run of an invalid ResourceFlavor denied)")
        for node, pool in NODE_POOLS.items():
            p.kubectl("label", "node", node, f"{POOL_LABEL}={pool}", "--overwrite")
        self.apply(*resource_flavors())
        self.startup_seconds = time.monotonic() - began

    def configuration(self) -> dict[str, Any]:
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "leaderElection": {"leaderElect": False},
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.ports['health']}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.ports['metrics']}"},
            "webhook": {"host": "127.0.0.1", "port": self.ports["webhook"], "certDir": str(self.certs)},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"], "externalFrameworks": [EXTERNAL_FRAMEWORK]},
            # waitForPodsReady: absent, so off (Kueue enables it whenever the section is there).
        }

    def _crd_names(self) -> list[str]:
        return [
            yaml.safe_load(f.read_text())["metadata"]["name"]
            for f in sorted((manifests_dir(self.version) / "crd" / "bases").glob("*.yaml"))
        ]

    def _healthy(self) -> bool:
        try:
            for path in ("/healthz", "/readyz"):
                url = f"http://127.0.0.1:{self.ports['health']}{path}"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status != 200:
                        return False
            return True
        except OSError:
            return False

    def _webhooks_answer(self) -> bool:
        bad = {
            "apiVersion": API,
            "kind": "ResourceFlavor",
            "metadata": {"name": "ti-test-webhook-probe"},
            "spec": {"nodeLabels": {"not a label key!": "x"}},
        }
        out = self.plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False
        )
        return out.returncode != 0 and 'admission webhook "vresourceflavor.kb.io" denied' in out.stderr

    def _wait(self, check, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
        assert self.component is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.component.running():
                raise RuntimeError(f"kueue exited while starting; last log lines:\n{self.component.tail()}")
            if check():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready within {timeout}s; log in {self.log}\n{self.component.tail()}")

    def stop(self) -> None:
        p = self.plane
        for q in list(self.queues):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                q.delete()
        # Webhooks first: with failurePolicy Fail, a Job created after Kueue stopped would be refused.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            for doc in ("mutating-webhook-configuration", "validating-webhook-configuration"):
                p.kubectl("delete", kind, WEBHOOK_PREFIX + doc, "--ignore-not-found", check=False)
        if self.component is not None:
            self.component.stop()
        for folder in reversed(self.made):
            with contextlib.suppress(OSError):  # not empty: someone else put something there
                folder.rmdir()


def leave_no_pods(plane: ControlPlane, namespace: str, kind: str) -> None:
    """Delete a test's `kind` objects and their pods, and wait for the pods to be gone: the kwok GPU
    nodes are shared by the whole tier (a later test counts on their 16 GPUs), and a namespace being
    deleted holds its pods' resources until the namespace controller gets to them."""
    plane.kubectl("delete", kind, "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
    plane.kubectl("delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", check=False)
    deadline = time.monotonic() + 60
    while plane.kubectl("get", "pods", "-n", namespace, "-o", "name", check=False).stdout.strip():
        assert time.monotonic() < deadline, f"the pods in {namespace} never went away"
        time.sleep(0.5)


@contextlib.contextmanager
def running_kueue(plane: ControlPlane) -> Iterator[Kueue]:
    k = Kueue(plane=plane, workdir=plane.workdir / "kueue")
    try:
        k.start()
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def kueue(control_plane: ControlPlane) -> Iterator[Kueue]:
    with running_kueue(control_plane) as k:
        sys.stderr.write(
            f"\n[kueue] {k.version} ready in {k.startup_seconds:.1f}s (webhooks at {k.webhook_url}); "
            f"log in {k.log}\n"
        )
        yield k
