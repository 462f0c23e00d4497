"""Configuration files of the real test node (containerd, CNI, kubelet, kube-proxy, CoreDNS): pure text.

Every value that this VM kind needs and a stock setup would not set says why beside it. See
tests/support/realnode.py for the node itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = "ti-real-node"
BRIDGE = "tireal0"
# A private range of its own (not kwok's 10.244/16, not Docker's 172.17/16); no route leaves the machine
# for it, no masquerade, and a FORWARD rule rejects anything from the bridge to another interface.
POD_CIDR = "10.213.0.0/24"
HOST_IP = "10.213.0.1"
SERVICE_CIDR = "10.0.0.0/24"  # the plane's --service-cluster-ip-range
KUBERNETES_SERVICE_IP = "10.0.0.1"
LABEL = "ti.io/real-node"
TAINT = f"{LABEL}=true:NoSchedule"
PAUSE_IMAGE = "docker.io/ti-local/pause:3.10"


@dataclass(frozen=True)
class Layout:
    """Where one run of the node keeps its files: `run` is wiped at every start, `images` is a cache."""

    state: Path

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def images(self) -> Path:
        # containerd's root: the imported, unpacked images survive runs (there is no registry to refetch)
        return self.state / "containerd-root"

    @property
    def containerd_sock(self) -> Path:
        return self.run / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.run / "kubelet"

    @property
    def logs(self) -> Path:
        return self.run / "logs"


def containerd_toml(lay: Layout) -> str:
    r = lay.run / "containerd"
    return f"""version = 2
root = "{lay.images}"
state = "{r / "state"}"

[grpc]
  address = "{lay.containerd_sock}"
[ttrpc]
  address = "{lay.containerd_sock}.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  disable_apparmor = true
  # This VM's root lacks CAP_SYS_RESOURCE: runc cannot set the negative OOM scores the kubelet asks for
  # ("failed to update /proc/self/oom_score_adj: Permission denied"); clamp them to containerd's own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{r / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{lay.run / "cni"}"
    max_conf_num = 1
"""


def cni_conflist(lay: Layout) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "ti-real-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(lay.run / "cni-ipam"),
                    },
                },
                # Docker sets FORWARD's policy to DROP and br_netfilter is on: without these rules
                # pod-to-pod packets across the bridge are dropped.
                {"type": "firewall", "backend": "iptables"},
                {"type": "loopback"},
            ],
        },
        indent=2,
    )


def kubelet_yaml(lay: Layout, ca: Path) -> str:
    k = lay.kubelet_root
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {HOST_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true, cacheTTL: 30s}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
  webhook: {{cacheAuthorizedTTL: 30s, cacheUnauthorizedTTL: 5s}}
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: /
enforceNodeAllocatable: ["pods"]
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{lay.containerd_sock}
imageServiceEndpoint: unix://{lay.containerd_sock}
# No registry: never garbage-collect the imported images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
evictionPressureTransitionPeriod: 10s
clusterDNS: [{HOST_IP}]
clusterDomain: cluster.local
resolvConf: {lay.run / "resolv.conf"}
maxPods: 50
podPidsLimit: 4096
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
nodeStatusReportFrequency: 1m
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
makeIPTablesUtilChains: false
shutdownGracePeriod: 0s
# Negative OOM scores are refused on this VM (see containerd's restrict_oom_score_adj).
oomScoreAdj: 0
logging: {{format: text}}
podLogsDir: {k / "pod-logs"}
volumePluginDir: {k / "volume-plugins"}
"""


def kube_proxy_yaml(kubeconfig: Path, healthz: int, metrics: int) -> str:
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
bindAddress: {HOST_IP}
clusterCIDR: {POD_CIDR}
mode: iptables
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
nodePortAddresses: ["{HOST_IP}/32"]
# route_localnet and the conntrack sysctls of the host stay as they are
iptables: {{localhostNodePorts: false, masqueradeAll: false}}
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"""


def corefile(kubeconfig: Path, ready: int, health: int) -> str:
    # Only cluster names: nothing is forwarded upstream, so no query leaves the machine.
    return f"""cluster.local:53 {{
    bind {HOST_IP}
    errors
    ready 127.0.0.1:{ready}
    health 127.0.0.1:{health}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} ti-test
        pods insecure
        ttl 5
    }}
    cache 5
}}
.:53 {{
    bind {HOST_IP}
    errors
    whoami
}}
"""


def catalog_yaml(instance_type: str, images: dict[str, str]) -> str:
    """The operator's catalog overlay: an instance type whose pods land on the real node only (its taint
    is tolerated, its label selected) and the locally built images."""
    return f"""instanceTypes:
  {instance_type}:
    description: the real test node (1 of its 2 cores per instance, with room for the toolkit steps)
    cpu: 0.8
    memory: 2Gi
    nodeSelector: {{{LABEL}: "true"}}
    tolerations:
      - {{key: {LABEL}, operator: Equal, value: "true", effect: NoSchedule}}
frameworks:
  "2.16":
    cpu: {images["tensorflow"]}
    gpu: {images["tensorflow"]}
toolkitImage: {images["toolkit"]}
"""


def kubernetes_endpoints(ip: str, port: int) -> dict[str, Any]:
    # The plane runs --endpoint-reconciler-type=none: nothing else sets where `kubernetes` points.
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes-ti-real-node",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "ti-real-node.tests",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
