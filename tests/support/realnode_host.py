"""What the real test node changes on the host, recorded before its start and undone by `sweep`; and the
small host-side helpers of tests/support/realnode.py (its client certificate, port probes, the node lock).

`sweep` is both the node's teardown and its cleanup at start: a SIGKILLed test run leaves containerd's
shims, the containers, their mounts and cgroups behind (the other components die with the runner, by
PR_SET_PDEATHSIG), and the next run removes them before it starts. It touches only what is the node's:
processes whose command line names its state folder, processes in the kubelet's `kubepods` cgroups,
mounts under its state folder, its bridge, the iptables chains and nft tables that were not there
before the first start, the sysctls the kubelet sets and the host paths it hard-codes (removed only
when they did not exist before).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.realnode_config import BRIDGE, Layout

# The kubelet sets these whatever its configuration says.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
# Host paths the kubelet, containerd's CNI code and its shims use whatever their root folders are.
HOST_PATHS = ("/var/lib/kubelet", "/var/lib/cni", "/var/log/containers", "/run/containerd")
CGROUP_TOPS = ("kubepods",)
FORWARD_GUARD = "TI-REALNODE"
# Chains of kube-proxy, the CNI plugins and ours; a chain of another name is never touched (Docker's).
OUR_CHAINS = ("KUBE-", "CNI-", FORWARD_GUARD)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def _nft_tables() -> list[str]:
    out = _run("nft", "list", "tables").stdout
    return sorted(
        line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")
    )


def _chains(tool: str) -> list[str]:
    out = _run(f"{tool}-save").stdout
    return sorted({line.split()[0][1:] for line in out.splitlines() if line.startswith(":")})


def record(lay: Layout) -> None:
    """Save the host's state once, before the node first changes it (kept until a sweep restores it)."""
    saved = lay.state / "host.orig.json"
    if saved.exists():
        return
    state = {
        "sysctls": {n: _sysctl(n) for n in SYSCTLS},
        "paths": [p for p in HOST_PATHS if os.path.lexists(p)],
        "nft": _nft_tables(),
        "chains": {t: _chains(t) for t in ("iptables", "ip6tables")},
    }
    lay.state.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(state, indent=1))


def guard_forwarding(subnet: str) -> None:
    """Pods may reach each other and this host, never another interface (no traffic leaves the machine)."""
    _run("iptables", "-N", FORWARD_GUARD)
    _run("iptables", "-F", FORWARD_GUARD)
    _run("iptables", "-A", FORWARD_GUARD, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "REJECT")
    _run("iptables", "-A", FORWARD_GUARD, "-s", subnet, "!", "-o", BRIDGE, "-j", "REJECT")
    if _run("iptables", "-C", "FORWARD", "-j", FORWARD_GUARD).returncode != 0:
        _run("iptables", "-I", "FORWARD", "1", "-j", FORWARD_GUARD)


def _our_pids(lay: Layout) -> list[int]:
    mark = str(lay.state).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if mark in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def _cgroup_dirs() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    dirs: list[Path] = []
    for hierarchy in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for top in CGROUP_TOPS:
            base = hierarchy / top
            if base.is_dir():
                dirs += [Path(d) for d, _, _ in os.walk(base)]
    return dirs


def _kill_all(lay: Layout) -> None:
    for _ in range(20):
        pids = set(_our_pids(lay))
        for d in _cgroup_dirs():
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    raise RuntimeError(f"real node: processes survive SIGKILL: {sorted(pids)}")


def _unmount(lay: Layout) -> None:
    prefix = str(lay.state)
    for _ in range(5):
        mounts = [
            line.split()[1].encode().decode("unicode_escape")
            for line in Path("/proc/mounts").read_text().splitlines()
        ]
        ours = sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")), reverse=True)
        if not ours:
            return
        for m in ours:
            _run("umount", "-l", m)
    raise RuntimeError(f"real node: mounts left under {prefix}")


def _network(saved: dict) -> None:
    _run("ip", "link", "del", BRIDGE)
    while _run("iptables", "-D", "FORWARD", "-j", FORWARD_GUARD).returncode == 0:
        pass
    cni_jump = ["FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules", "-j", "CNI-FORWARD"]
    while _run("iptables", "-D", *cni_jump).returncode == 0:
        pass
    for tool in ("iptables", "ip6tables"):
        before = set(saved.get("chains", {}).get(tool, []))
        for table in ("filter", "nat", "mangle", "raw"):
            new = [c for c in _table_chains(tool, table) if c.startswith(OUR_CHAINS) and c not in before]
            for chain in new:  # first every rule that jumps to a new chain, then the chains
                _run(tool, "-t", table, "-F", chain)
            for chain in _base_chains(tool, table):
                for rule in _rules(tool, table, chain):
                    if any(f"-j {c}" in rule for c in new):
                        _run(tool, "-t", table, *shlex.split(rule.replace("-A ", "-D ", 1)))
            for chain in new:
                _run(tool, "-t", table, "-X", chain)
    # Tables that iptables-nft made for kube-proxy (ip mangle, ip6 nat, ...): only those that were not
    # there at the recorded start, and only once no rule is left in them.
    if "nft" in saved:
        for table in _nft_tables():
            if table not in saved["nft"] and not _nft_rules(table):
                _run("nft", "delete", "table", *table.split())


def _nft_rules(table: str) -> list[str]:
    out = _run("nft", "list", "table", *table.split()).stdout
    lines = [line.strip() for line in out.splitlines()]
    return [
        line for line in lines if line and not line.startswith(("table ", "chain ", "type ", "policy ", "}"))
    ]


def _table_chains(tool: str, table: str) -> list[str]:
    out = _run(tool, "-t", table, "-S").stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("-N ")]


def _base_chains(tool: str, table: str) -> list[str]:
    out = _run(tool, "-t", table, "-S").stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("-P ")]


def _rules(tool: str, table: str, chain: str) -> list[str]:
    out = _run(tool, "-t", table, "-S", chain).stdout
    return [line for line in out.splitlines() if line.startswith("-A ")]


def _cgroups() -> None:
    for d in sorted(_cgroup_dirs(), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()


def sweep(lay: Layout) -> list[str]:
    """Remove everything the node left on the host; returns what could not be removed (empty: clean)."""
    _kill_all(lay)
    _unmount(lay)
    saved_file = lay.state / "host.orig.json"
    saved = json.loads(saved_file.read_text()) if saved_file.exists() else {}
    _network(saved)
    _cgroups()
    for name, value in saved.get("sysctls", {}).items():
        if _sysctl(name) != value:
            Path("/proc/sys", *name.split(".")).write_text(value)
    for path in HOST_PATHS:
        if path not in saved.get("paths", list(HOST_PATHS)):
            _run("rm", "-rf", path)
    if lay.run.exists():
        _run("rm", "-rf", "--one-file-system", str(lay.run))
    left = leftovers(lay, saved)
    if not left:
        saved_file.unlink(missing_ok=True)
    return left


def leftovers(lay: Layout, saved: dict | None = None) -> list[str]:
    """What of the node is still on the host."""
    if saved is None:
        f = lay.state / "host.orig.json"
        saved = json.loads(f.read_text()) if f.exists() else {}
    left = [f"process {p}" for p in _our_pids(lay)]
    left += [f"cgroup {d}" for d in _cgroup_dirs()]
    left += [
        f"mount {m}" for m in Path("/proc/mounts").read_text().split() if m.startswith(str(lay.state) + "/")
    ]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        left.append(f"bridge {BRIDGE}")
    for tool in ("iptables", "ip6tables"):
        before = set(saved.get("chains", {}).get(tool, []))
        left += [f"{tool} chain {c}" for c in _chains(tool) if c.startswith(OUR_CHAINS) and c not in before]
    if "nft" in saved:
        left += [f"nft table {t}" for t in _nft_tables() if t not in saved["nft"]]
    for name, value in saved.get("sysctls", {}).items():
        if _sysctl(name) != value:
            left.append(f"sysctl {name}={_sysctl(name)} (was {value})")
    left += [
        f"path {p}" for p in HOST_PATHS if os.path.lexists(p) and p not in saved.get("paths", HOST_PATHS)
    ]
    return left


def issue_client_cert(pki: Path, name: str, cn: str, org: str) -> None:
    """A client certificate from the plane's CA."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def tcp_open(ip: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((ip, port)) == 0


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def node_lock(lay: Layout) -> Iterator[None]:
    lay.state.mkdir(parents=True, exist_ok=True)
    with open(lay.state / "lock", "w") as f:
        deadline = time.monotonic() + float(os.environ.get("TI_REALNODE_LOCK_WAIT", "1800"))
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another test run holds the real node ({lay.state / 'lock'})"
                    ) from None
                time.sleep(1)
        yield
