"""A real node in the test plane: a kubelet that runs real containers, joined to the same control plane
as the kwok nodes (tests/support/controlplane.py), one per test run.

Fixture `real_node` (session scope) starts, on this machine (root, Linux; `make test` installs and starts
what it needs: hack/system-deps.sh, hack/toolchain.sh, `make images`):
- a containerd of its own (Debian's, the one Docker Engine uses) with runc, its root a cache in
  $TI_CACHE/realnode/containerd-root, the project's images imported into it from the Docker engine
  (again only when an image changed); pods use them with the default pull policy, never a registry;
- a CNI bridge `tireal0` with the pod network 10.213.0.0/24 and the host at 10.213.0.1: no masquerade,
  and a FORWARD rule rejects what would leave the machine through another interface;
- the kubelet, registered as node `ti-real-node`, labelled `ti.io/real-node=true` and tainted
  `ti.io/real-node=true:NoSchedule`, so only pods that select and tolerate it land there;
- CoreDNS on 10.213.0.1:53 (Service, headless-Service and pod names of cluster.local) and kube-proxy
  (ClusterIP Services); the API server is reachable from pods through the `kubernetes` Service
  (10.0.0.1:443, its EndpointSlice points at 10.213.0.1, forwarded to the loopback API server).

The `RealNode` it yields gives tests:
- `name`, `host_ip` (10.213.0.1), `images` (role -> image: operator, toolkit, tensorflow),
  `instance_type` (TI.REALNODE.CPU: its pods run on the real node), `catalog` (the catalog file that
  defines it and points the framework and toolkit images at the local ones; TI_CATALOG_FILE);
- `expose(port)`: the URL at which pods reach a loopback port of the host (`http://10.213.0.1:<port>`);
- `operator_env(object_store)`: the environment that makes an operator on the host render pods for this
  node: TI_CATALOG_FILE, TI_COS_ENDPOINT (the store, as pods reach it), TI_COS_REGION, TI_STORAGE_SECRET
  (`ti-cos-credentials`, for jobs without storageSecretRef); `chart_values(object_store)`: the same as
  Helm values for the chart's in-cluster operator, which itself runs on the real node;
- `storage_secret(namespace, object_store)`: the `ti-cos-credentials` Secret of the store's credentials;
- `job_manifest(example, bucket, ...)`: an example manifest pointed at the test bucket and this node;
- `upload_example(example_dir, object_store, bucket, prefix)`: its source and data uploaded where it
  reads them; `import_images(*tags)`: more Docker images into the node (a custom image of a test's own).
tests/support/realnode_jobs.py runs a script of a test's own as a job there (`script_job`, `job_ended`,
`read_object`).

Teardown deletes the node's pods, stops every component and removes what they left on the host
(tests/support/realnode_host.py); the same sweep runs before a start, for what a SIGKILLed run left.
Component logs are copied to test-logs/realnode/ when a test failed. One node per machine: a second
test run waits for the first (a lock file in the state folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import controlplane as cp
from tests.support import realnode_config as cfg
from tests.support import realnode_host as host
from tests.support.controlplane import REPO, Component, ControlPlane, free_port, toolchain_bin

INSTANCE_TYPE = "TI.REALNODE.CPU"
REGISTRY = os.environ.get("TI_IMAGE_REGISTRY", "ghcr.io/ti-operator")
VERSION = "0.1.0"
IMAGES = {
    "operator": f"{REGISTRY}/ti-operator:{VERSION}",
    "toolkit": f"{REGISTRY}/ti-toolkit:{VERSION}",
    "tensorflow": f"{REGISTRY}/tensorflow:2.16.1-cpu",
}
STORAGE_SECRET = "ti-cos-credentials"


def state_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("TI_REALNODE_DIR", cache / "ti-operator" / "realnode"))


@dataclass
class RealNode:
    plane: ControlPlane
    lay: cfg.Layout
    bin: Path
    name: str = cfg.NODE_NAME
    host_ip: str = cfg.HOST_IP
    instance_type: str = INSTANCE_TYPE
    images: dict[str, str] = field(default_factory=lambda: dict(IMAGES))
    components: dict[str, Component] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def catalog(self) -> Path:
        return self.lay.run / "catalog.yaml"

    # -- what tests use ------------------------------------------------------------------------------

    def expose(self, port: int) -> str:
        """Forward host_ip:port to 127.0.0.1:port (once), so pods reach a loopback server of the host."""
        name = f"forward-{port}"
        if name not in self.components:
            self._forward(name, port, port)
        return f"http://{self.host_ip}:{port}"

    def operator_env(self, object_store: Any) -> dict[str, str]:
        return {
            "TI_CATALOG_FILE": str(self.catalog),
            "TI_COS_ENDPOINT": self.expose(object_store.port),
            "TI_COS_REGION": object_store.region,
            "TI_STORAGE_SECRET": STORAGE_SECRET,
        }

    def chart_values(self, object_store: Any, namespace: str) -> dict[str, Any]:
        """Helm values that run the chart's operator on this node, watching `namespace`, with the same
        catalog, toolkit image and store as `operator_env`."""
        catalog = yaml.safe_load(self.catalog.read_text())
        image, tag = self.images["operator"].rsplit(":", 1)
        return {
            "image": {"repository": image, "tag": tag, "pullPolicy": "IfNotPresent"},
            "rbac": {"scope": "namespaced"},
            "watchNamespaces": [namespace],
            "nodeSelector": {cfg.LABEL: "true"},
            "tolerations": [{"key": cfg.LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
            "config": {
                "toolkitImage": catalog["toolkitImage"],
                "cos": {"region": object_store.region, "endpoint": self.expose(object_store.port)},
                "defaultStorageSecret": STORAGE_SECRET,
                "stopGraceSeconds": 1,
                "instanceTypes": catalog["instanceTypes"],
                "frameworks": catalog["frameworks"],
            },
        }

    def storage_secret(self, namespace: str, object_store: Any, name: str = STORAGE_SECRET) -> str:
        self.plane.kubectl(
            "create", "secret", "generic", name, "-n", namespace,
            f"--from-literal=TENCENTCLOUD_SECRETID={object_store.secret_id}",
            f"--from-literal=TENCENTCLOUD_SECRETKEY={object_store.secret_key}",
            f"--from-literal=TENCENTCLOUD_REGION={object_store.region}",
        )  # fmt: skip
        return name

    def job_manifest(
        self, example: Path, bucket: str, name: str | None = None, **spec: Any
    ) -> dict[str, Any]:
        """An example TFTrainingJob with its bucket replaced by `bucket`, on this node's instance type."""
        text = example.read_text().replace("my-bucket-1250000000", bucket)
        manifest: dict[str, Any] = yaml.safe_load(text)
        if name:
            manifest["metadata"]["name"] = name
        manifest["spec"]["instanceType"] = self.instance_type
        manifest["spec"].update(spec)
        return manifest

    def upload_example(self, example_dir: Path, object_store: Any, bucket: str, prefix: str) -> None:
        """The example's code as sourcedir.tar.gz and its generated data, where its manifest reads them."""
        import tarfile

        client = object_store.client()
        with tempfile.TemporaryDirectory() as tmp:
            tgz = Path(tmp) / "sourcedir.tar.gz"
            with tarfile.open(tgz, "w:gz") as tar:
                for f in sorted(example_dir.iterdir()):
                    if f.is_file() and f.suffix in (".py", ".txt", ".json"):
                        tar.add(f, arcname=f.name)
            client.upload_file(Bucket=bucket, Key=f"{prefix}/source/sourcedir.tar.gz", LocalFilePath=str(tgz))
            data = Path(tmp) / "data"
            subprocess.run(
                [sys.executable, str(REPO / "examples" / "make_data.py"), str(data)], check=True, timeout=300
            )
            for f in sorted(data.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(data).as_posix()
                    client.upload_file(Bucket=bucket, Key=f"ti-examples/data/{rel}", LocalFilePath=str(f))

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, **kw)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        began = time.monotonic()
        for tool in ("kubelet", "kube-proxy", "coredns", "pause"):
            if not (self.bin / tool).exists():
                raise RuntimeError(
                    f"{tool} is missing from {self.bin}: run `make toolchain` (hack/toolchain.sh)"
                )
        for tool in ("containerd", "runc", "ctr", "socat", "ip", "iptables", "nft", "docker"):
            if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
                raise RuntimeError(f"{tool} is not installed: run hack/system-deps.sh (make test does)")
        if os.geteuid() != 0:
            raise RuntimeError("the real node (kubelet, containerd, a bridge) needs root")
        left = host.sweep(self.lay)
        if left:
            raise RuntimeError(f"a previous real node left things the sweep could not remove: {left}")
        host.record(self.lay)
        self._write_files()
        self.timings["prepare"] = time.monotonic() - began
        t = time.monotonic()
        self._start("containerd", ["containerd", "--config", str(self.lay.run / "containerd.toml")])
        self._wait(lambda: self._ctr("version").returncode == 0, "containerd", 30)
        self._import_images()
        self.timings["images"] = time.monotonic() - t
        t = time.monotonic()
        self._bridge()
        self._join()
        self._start(
            "kubelet",
            [
                str(self.bin / "kubelet"),
                f"--config={self.lay.run / 'kubelet.yaml'}",
                f"--kubeconfig={self.lay.run / 'kubelet.kubeconfig'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.host_ip}",
                f"--root-dir={self.lay.kubelet_root}",
                f"--cert-dir={self.lay.run / 'kubelet-pki'}",
                f"--node-labels={cfg.LABEL}=true",
                f"--register-with-taints={cfg.TAINT}",
                "--v=2",
            ],
        )
        self._wait(self._node_ready, "kubelet", 90)
        self.timings["node"] = time.monotonic() - t
        t = time.monotonic()
        self._extras()
        self.timings["dns+proxy"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - began

    def _write_files(self) -> None:
        r = self.lay.run
        for d in (r, self.lay.logs, self.lay.images, r / "cni", self.lay.kubelet_root / "pod-logs"):
            d.mkdir(parents=True, exist_ok=True)
        (r / "containerd.toml").write_text(cfg.containerd_toml(self.lay))
        (r / "cni" / "10-ti-real-node.conflist").write_text(cfg.cni_conflist(self.lay))
        (r / "kubelet.yaml").write_text(cfg.kubelet_yaml(self.lay, self.plane.pki / "ca.crt"))
        (r / "resolv.conf").write_text("nameserver 127.0.0.1\noptions ndots:1\n")
        (r / "catalog.yaml").write_text(cfg.catalog_yaml(self.instance_type, self.images))

    def _start(self, name: str, argv: list[str]) -> Component:
        c = Component(name, argv, self.lay.logs / f"{name}.log")
        c.start()
        self.components[name] = c
        return c

    def _forward(self, name: str, port: int, to: int) -> None:
        # The log file option puts the state folder in socat's command line: the sweep finds it by that.
        self._start(
            name,
            [
                "socat", "-lf", str(self.lay.logs / f"{name}.socat.log"),
                f"TCP-LISTEN:{port},bind={self.host_ip},fork,reuseaddr", f"TCP:127.0.0.1:{to}",
            ],
        )  # fmt: skip
        self._wait(lambda: host.tcp_open(self.host_ip, port), name, 10)

    def _wait(self, check: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.components.get(what)
            if c is not None and not c.running():
                raise RuntimeError(f"{what} exited while starting; last log lines:\n{c.tail()}")
            if check():
                return
            time.sleep(0.2)
        c = self.components.get(what)
        raise RuntimeError(
            f"{what} not ready within {timeout}s; logs in {self.lay.logs}\n{c.tail() if c else ''}"
        )

    def _ctr(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(
            ["ctr", "--address", str(self.lay.containerd_sock), "-n", "k8s.io", *args],
            capture_output=True, timeout=kw.pop("timeout", 60), **kw,
        )  # fmt: skip

    def _import_images(self) -> None:
        self._pause_image()
        self.import_images(cfg.PAUSE_IMAGE.removeprefix("docker.io/"), *self.images.values())

    def import_images(self, *wanted: str) -> None:
        """Import Docker images into the node's containerd (only those not there or changed)."""
        ids: dict[str, str] = {}
        for image in wanted:
            out = subprocess.run(
                ["docker", "image", "inspect", "-f", "{{.Id}}", image], capture_output=True, text=True
            )
            if out.returncode != 0:
                raise RuntimeError(f"image {image} is not in the Docker engine: run `make images` first")
            ids[image] = out.stdout.strip()
        stamp = self.lay.state / "images.json"
        done = json.loads(stamp.read_text()) if stamp.exists() else {}
        have = self._ctr("images", "ls", "-q", text=True).stdout.split()
        todo = [i for i in wanted if done.get(i) != ids[i] or not ({i, f"docker.io/{i}"} & set(have))]
        if todo:
            save = subprocess.Popen(["docker", "save", *todo], stdout=subprocess.PIPE)
            imp = self._ctr("images", "import", "-", stdin=save.stdout, timeout=900, text=True)
            save.wait()
            if save.returncode or imp.returncode:
                raise RuntimeError(f"importing {todo} into the node's containerd failed: {imp.stderr}")
            done.update({i: ids[i] for i in todo})
            stamp.write_text(json.dumps(done, indent=1))

    def _pause_image(self) -> None:
        tag = cfg.PAUSE_IMAGE.removeprefix("docker.io/")
        with tempfile.TemporaryDirectory() as ctx:
            shutil.copy(self.bin / "pause", Path(ctx) / "pause")
            shutil.copy(REPO / "images" / "pause" / "Dockerfile", Path(ctx) / "Dockerfile")
            out = subprocess.run(
                ["docker", "build", "-q", "-t", tag, ctx],
                capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=120,
            )  # fmt: skip
        if out.returncode:
            raise RuntimeError(f"building {tag} failed: {out.stderr}")

    def _bridge(self) -> None:
        # Before the kubelet: it needs a node IP that is not loopback, and the API server reaches it there.
        subprocess.run(["ip", "link", "add", cfg.BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", cfg.BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", cfg.BRIDGE, "up"], check=True)
        host.guard_forwarding(cfg.POD_CIDR)

    def _join(self) -> None:
        pki = self.plane.pki
        host.issue_client_cert(pki, "real-node", f"system:node:{self.name}", "system:nodes")
        cp.write_kubeconfig(
            self.lay.run / "kubelet.kubeconfig", self.plane.server, pki / "ca.crt",
            pki / "real-node.crt", pki / "real-node.key",
        )  # fmt: skip
        # The plane authorizes with RBAC only (no Node authorizer): the node gets system:node explicitly.
        binding = self.kubectl(
            "create", "clusterrolebinding", "ti-real-node", "--clusterrole=system:node",
            f"--user=system:node:{self.name}", "--dry-run=client", "-o", "yaml",
        ).stdout  # fmt: skip
        self.kubectl("apply", "-f", "-", input=binding)

    def _node_ready(self) -> bool:
        out = self.kubectl(
            "get", "node", self.name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )  # fmt: skip
        return out.stdout == "True"

    def _extras(self) -> None:
        api_port = int(self.plane.server.rsplit(":", 1)[1])
        self._forward("forward-apiserver", api_port, api_port)
        self.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(cfg.kubernetes_endpoints(self.host_ip, api_port))
        )
        ready, health, proxy_health, proxy_metrics = (free_port() for _ in range(4))
        corefile = self.lay.run / "Corefile"
        corefile.write_text(cfg.corefile(self.plane.kubeconfig, ready, health))
        self._start("coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])
        proxy = self.lay.run / "kube-proxy.yaml"
        proxy.write_text(cfg.kube_proxy_yaml(self.plane.kubeconfig, proxy_health, proxy_metrics))
        self._start("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={proxy}", "--v=1"])
        self._wait(lambda: host.http_ok(f"http://127.0.0.1:{ready}/ready"), "coredns", 30)
        self._wait(lambda: host.http_ok(f"http://127.0.0.1:{proxy_health}/healthz"), "kube-proxy", 30)

    def stop(self) -> list[str]:
        """Delete the node's pods, stop everything, sweep the host; returns what is left (empty: clean)."""
        if "kubelet" in self.components and self.components["kubelet"].running():
            self.kubectl(
                "delete", "pods", "-A", f"--field-selector=spec.nodeName={self.name}",
                "--grace-period=1", "--wait=true", "--timeout=60s", check=False,
            )  # fmt: skip
        for name in ("kubelet", "kube-proxy"):
            if name in self.components:
                self.components.pop(name).stop()
        if (self.bin / "kube-proxy").exists():
            subprocess.run([str(self.bin / "kube-proxy"), "--cleanup"], capture_output=True, timeout=60)
        for c in reversed(list(self.components.values())):
            c.stop()
        self.components.clear()
        return host.sweep(self.lay)


@contextlib.contextmanager
def running_real_node(
    plane: ControlPlane, keep_logs: Callable[[], bool] = lambda: False
) -> Iterator[RealNode]:
    """Start the node on `plane` (waiting for another run's node to go); stop it and sweep the host on the
    way out, whatever happened. Its component logs go to test-logs/realnode/ when `keep_logs()` says so."""
    lay = cfg.Layout(state_dir())
    with host.node_lock(lay):
        node = RealNode(plane=plane, lay=lay, bin=toolchain_bin())
        try:
            node.start()
            times = ", ".join(f"{k} {v:.1f}s" for k, v in node.timings.items())
            sys.stderr.write(f"\n[real-node] {node.name} Ready ({times}); logs in {lay.logs}\n")
            yield node
        finally:
            if keep_logs() or not node.timings.get("total"):
                logs_dir = REPO / "test-logs" / "realnode"
                shutil.rmtree(logs_dir, ignore_errors=True)
                with contextlib.suppress(OSError):
                    shutil.copytree(lay.logs, logs_dir)
                    sys.stderr.write(f"\n[real-node] component logs kept in {logs_dir}\n")
            left = node.stop()
    if left:
        raise RuntimeError(f"the real node left things on the host: {left}")


@pytest.fixture(scope="session")
def real_node(control_plane: ControlPlane) -> Iterator[RealNode]:
    with running_real_node(control_plane, keep_logs=lambda: cp._failed) as node:
        yield node
