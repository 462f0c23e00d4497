"""The Pod Security Standards' `baseline` and `restricted` rules (v1.34, "latest"), as the API server's
PodSecurity admission checks them, over a pod manifest. A unit-test stand-in for that admission; the
integration tier checks the real one (tests/integration/test_pod_security.py).

https://kubernetes.io/docs/concepts/security/pod-security-standards/
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _seccomp_ok(profile: Mapping[str, Any] | None) -> bool:
    return bool(profile) and (profile or {}).get("type") in ("RuntimeDefault", "Localhost")


def baseline(pod: Mapping[str, Any]) -> list[str]:
    """What keeps `pod` out of a namespace that enforces `baseline`."""
    spec = pod.get("spec") or {}
    ctx = spec.get("securityContext") or {}
    out = [f"spec.{k} is true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if (ctx.get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess is true")
    out += [f"volume {v.get('name')} is a hostPath" for v in spec.get("volumes") or [] if "hostPath" in v]
    if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("spec.securityContext.seccompProfile is Unconfined")
    if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append("spec.securityContext.appArmorProfile is Unconfined")
    out += [
        f"sysctl {s.get('name')} is not safe"
        for s in ctx.get("sysctls") or []
        if s.get("name") not in _SAFE_SYSCTLS
    ]
    out += _selinux("spec.securityContext", ctx.get("seLinuxOptions"))
    for c in _containers(spec):
        name, sc = c.get("name"), c.get("securityContext") or {}
        where = f"container {name}"
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: hostProcess")
        extra = set((sc.get("capabilities") or {}).get("add") or []) - _BASELINE_CAPABILITIES
        if extra:
            out.append(f"{where}: adds capabilities {sorted(extra)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{where}: hostPort")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{where}: procMount {sc['procMount']}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: seccompProfile Unconfined")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: appArmorProfile Unconfined")
        out += _selinux(where, sc.get("seLinuxOptions"))
    return out


def _selinux(where: str, options: Mapping[str, Any] | None) -> list[str]:
    if not options:
        return []
    out = []
    if options.get("type", "") not in _SELINUX_TYPES:
        out.append(f"{where}: seLinuxOptions.type {options['type']}")
    out += [f"{where}: seLinuxOptions.{k} is set" for k in ("user", "role") if options.get(k)]
    return out


def restricted(pod: Mapping[str, Any]) -> list[str]:
    """What keeps `pod` out of a namespace that enforces `restricted` (empty: admitted)."""
    spec = pod.get("spec") or {}
    ctx = spec.get("securityContext") or {}
    out = baseline(pod)
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            out.append(f"volume {v.get('name')} has a restricted type {sorted(kinds)}")
    if ctx.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser is 0")
    pod_non_root = ctx.get("runAsNonRoot") is True
    if ctx.get("runAsNonRoot") is False:
        out.append("spec.securityContext.runAsNonRoot is false")
    pod_seccomp = _seccomp_ok(ctx.get("seccompProfile"))
    for c in _containers(spec):
        name, sc = c.get("name"), c.get("securityContext") or {}
        where = f"container {name}"
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities do not drop ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            out.append(f"{where}: adds capabilities {sorted(extra)}")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            out.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser is 0")
        if "seccompProfile" in sc:
            if not _seccomp_ok(sc["seccompProfile"]):
                out.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost")
        elif not pod_seccomp:
            out.append(f"{where}: no seccompProfile (neither the pod's nor its own)")
    return out
