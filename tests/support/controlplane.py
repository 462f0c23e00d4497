"""A real Kubernetes control plane on loopback: etcd, kube-apiserver (TLS, RBAC, signed service-account
tokens), kube-controller-manager, kube-scheduler and kwok with four fake nodes (two CPU, two GPU).

The binaries come from hack/toolchain.sh (pinned in hack/versions.env). If they are missing, or a
component does not become ready, the fixture fails: a tier that cannot start its servers never skips.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from tests.support.pki import Authority, new_key, write_cert, write_key

REPO = Path(__file__).resolve().parents[2]
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_LABEL = "nvidia.com/gpu.present"
GPU_RESOURCE = "nvidia.com/gpu"
KWOK_LOGS_CRD = Path(__file__).parent / "kwok" / "logs-crd.yaml"


def toolchain_bin() -> Path:
    explicit = os.environ.get("TI_TOOLCHAIN_BIN")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = Path(os.environ.get("TI_TOOLCHAIN_DIR", cache / "ti-operator" / "toolchain"))
    return root / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- certificates ---------------------------------------------------------------------------------


def _write_pki(pki: Path) -> None:
    ca = Authority("ti-operator-test-ca")
    ca.write(pki, "ca")

    def issue(name: str, cn: str, org: str | None = None, **server: list[str]) -> None:
        cert, key = ca.issue(cn, org=org, **server)
        write_cert(cert, pki / f"{name}.crt")
        write_key(key, pki / f"{name}.key")

    issue(
        "apiserver",
        "kube-apiserver",
        dns=["localhost", "kubernetes.default.svc"],
        ips=["127.0.0.1", "10.0.0.1"],
    )
    issue("admin", "ti-test-admin", "system:masters")
    issue("controller-manager", "system:kube-controller-manager")
    issue("scheduler", "system:kube-scheduler")
    issue("kwok", "kwok-controller", "system:masters")
    issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")

    sa = new_key()
    write_key(sa, pki / "sa.key")
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kwok_node(name: str, capacity: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node that the plane's kwok runs (it manages nodes with the kwok annotation)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", **(labels or {})},
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    user: dict[str, str] = {}
    if cert and key:
        user = {"client-certificate": str(cert), "client-key": str(key)}
    if token:
        user = {"token": token}
    context: dict[str, str] = {"cluster": "ti-test", "user": "user"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ti-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "ti-test", "context": context}],
        "current-context": "ti-test",
    }
    path.write_text(yaml.safe_dump(config))
    return path


# ---- processes ------------------------------------------------------------------------------------


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        # A session of its own, so teardown can kill the whole group; and a death signal, so even a
        # SIGKILLed test runner leaves no component behind.
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ControlPlane:
    """Handle on the running plane: where it listens, how to reach it, and its processes."""

    workdir: Path
    bin: Path
    server: str = ""
    kubeconfig: Path = Path()
    components: dict[str, Component] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl, helm, the operator) that talk to this plane."""
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def api_client(self):  # type: ignore[no-untyped-def]
        from kubernetes import client, config

        return config.new_client_from_config(
            config_file=str(self.kubeconfig), client_configuration=client.Configuration()
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get(self, path: str, cert: str = "admin") -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / f"{cert}.crt"), str(self.pki / f"{cert}.key"))
        with urllib.request.urlopen(f"{self.server}{path}", context=ctx, timeout=10) as resp:
            return bytes(resp.read())

    def metrics(self) -> str:
        return self.get("/metrics").decode()

    def kubeconfig_for_token(self, token: str, path: Path, namespace: str | None = None) -> Path:
        return write_kubeconfig(path, self.server, self.pki / "ca.crt", token=token, namespace=namespace)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(
        self,
        skip: tuple[str, ...] = (),
        kwok_config: Path | None = None,
        extra_args: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Start every component but `skip`. `kwok_config` is a file of kwok Stages (`kwok --config`)
        that replaces kwok's default pod stages; `extra_args` appends flags to a component's command line
        (a repeated flag wins over the default, e.g. kube-controller-manager's --kube-api-qps)."""
        began = time.monotonic()
        for tool in (
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "kubectl",
        ):
            if not (self.bin / tool).exists():
                raise RuntimeError(
                    f"{tool} is missing from {self.bin}: run `make toolchain` (hack/toolchain.sh) to build the "
                    "pinned control plane first"
                )
        self.pki.mkdir(parents=True)
        self.logs.mkdir(parents=True)
        _write_pki(self.pki)
        p = self.pki
        self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.kubeconfig = write_kubeconfig(
            self.workdir / "kubeconfig", self.server, p / "ca.crt", p / "admin.crt", p / "admin.key"
        )
        kcm_kc = write_kubeconfig(
            self.workdir / "kcm.kubeconfig",
            self.server,
            p / "ca.crt",
            p / "controller-manager.crt",
            p / "controller-manager.key",
        )
        sched_kc = write_kubeconfig(
            self.workdir / "scheduler.kubeconfig",
            self.server,
            p / "ca.crt",
            p / "scheduler.crt",
            p / "scheduler.key",
        )
        kwok_kc = write_kubeconfig(
            self.workdir / "kwok.kubeconfig", self.server, p / "ca.crt", p / "kwok.crt", p / "kwok.key"
        )
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        b = self.bin
        specs = {
            "etcd": [
                str(b / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            "kube-apiserver": [
                str(b / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                # Aggregation-layer CA: without it every component logs "missing content for CA bundle".
                f"--requestheader-client-ca-file={p / 'ca.crt'}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            ],
            "kube-controller-manager": [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={kcm_kc}",
                f"--authentication-kubeconfig={kcm_kc}",
                f"--authorization-kubeconfig={kcm_kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kcm']}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
            "kube-scheduler": [
                str(b / "kube-scheduler"),
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
            ],
            "kwok": [
                str(b / "kwok"),
                f"--kubeconfig={kwok_kc}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                "--node-ip=127.0.0.1",
                f"--node-port={self.ports['kwok']}",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
                "--cidr=10.244.0.1/16",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
            ],
        }
        # Logs objects tell kwok which file to serve as a pod's log (pods/log), as a kubelet would.
        specs["kwok"].append("--enable-crds=Logs")
        if kwok_config is not None:
            specs["kwok"].append(f"--config={kwok_config}")
        for name, args in (extra_args or {}).items():
            specs[name].extend(args)
        self.components = {
            name: Component(name, argv, self.logs / f"{name}.log")
            for name, argv in specs.items()
            if name not in skip
        }
        self.components["etcd"].start()
        self._wait(lambda: _tcp_open(self.ports["etcd"]), "etcd")
        self.components["kube-apiserver"].start()
        self._wait(self._ready, "kube-apiserver", timeout=90)
        self.kubectl("apply", "-f", str(KWOK_LOGS_CRD))
        self._wait(self._logs_crd_established, "the kwok Logs CRD")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            if name in self.components:
                self.components[name].start()
        self._create_nodes()
        self._wait(self._nodes_ready, "kwok nodes Ready", timeout=60, needs=("kwok",))
        self.startup_seconds = time.monotonic() - began

    def _logs_crd_established(self) -> bool:
        out = self.kubectl(
            "get", "crd", "logs.kwok.x-k8s.io", "-o",
            'jsonpath={.status.conditions[?(@.type=="Established")].status}', check=False,
        )  # fmt: skip
        return out.stdout == "True"

    def _ready(self) -> bool:
        try:
            return self.get("/readyz") == b"ok"
        except OSError:
            return False

    def _wait(self, check, what: str, timeout: float = 30, needs: tuple[str, ...] = ()) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        watched = [self.components[n] for n in self.components if n in (what, *needs) or what.startswith(n)]
        while time.monotonic() < deadline:
            for c in watched:
                if not c.running():
                    raise RuntimeError(f"{c.name} exited while starting; last log lines:\n{c.tail()}")
            if check():
                return
            time.sleep(0.2)
        tails = "\n".join(f"--- {c.name}\n{c.tail()}" for c in watched)
        raise RuntimeError(f"{what} not ready within {timeout}s; logs in {self.logs}\n{tails}")

    def _create_nodes(self) -> None:
        nodes = []
        for i, gpu in ((0, False), (1, False), (0, True), (1, True)):
            capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
            labels = {"kubernetes.io/os": "linux"}
            if gpu:
                capacity[GPU_RESOURCE] = "8"
                labels[GPU_LABEL] = "true"
            nodes.append(kwok_node(f"kwok-{'gpu' if gpu else 'cpu'}-{i}", capacity, labels))
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(nodes))

    def _nodes_ready(self) -> bool:
        out = self.kubectl(
            "get",
            "nodes",
            "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
            check=False,
        ).stdout.split()
        return len(out) == 4 and all(s == "True" for s in out)

    def stop(self) -> None:
        for c in reversed(list(self.components.values())):
            c.stop()


def _die_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_control_plane(
    skip: tuple[str, ...] = (),
    kwok_config: Path | None = None,
    extra_args: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[ControlPlane]:
    """Start a plane in a fresh folder; stop every process on the way out, whatever happened.
    `kwok_config` and `extra_args` as in `ControlPlane.start` (unset: the default plane)."""
    workdir = Path(tempfile.mkdtemp(prefix="ti-plane-", dir=os.environ.get("TI_TEST_TMP")))
    plane = ControlPlane(workdir=workdir, bin=toolchain_bin())
    try:
        plane.start(skip=skip, kwok_config=kwok_config, extra_args=extra_args)
        yield plane
    finally:
        plane.stop()


# ---- fixtures -------------------------------------------------------------------------------------

_failed = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    global _failed
    outcome = yield
    if outcome.get_result().failed:
        _failed = True


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    # TI_PLANE_SKIP=kube-scheduler (comma-separated) leaves components out, to show which tests rely on them.
    skip = tuple(s for s in os.environ.get("TI_PLANE_SKIP", "").split(",") if s)
    with running_control_plane(skip=skip) as plane:
        sys.stderr.write(
            f"\n[control-plane] ready in {plane.startup_seconds:.1f}s at {plane.server}; "
            f"KUBECONFIG={plane.kubeconfig}; component logs in {plane.logs}\n"
        )
        yield plane
        logs_dir = REPO / "test-logs" / "controlplane"
        if _failed:
            shutil.rmtree(logs_dir, ignore_errors=True)
            shutil.copytree(plane.logs, logs_dir)
            sys.stderr.write(f"\n[control-plane] a test failed: component logs kept in {logs_dir}\n")
    if not _failed:
        shutil.rmtree(plane.workdir, ignore_errors=True)


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (without waiting for it to drain)."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{digest}"
    control_plane.kubectl("create", "namespace", name)
    # The ServiceAccount controller creates "default" asynchronously; pods need it to pass admission.
    deadline = time.monotonic() + 30
    while control_plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"ServiceAccount default never appeared in namespace {name}")
        time.sleep(0.2)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
