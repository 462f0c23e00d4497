"""The fetch step (init container): source, channels, config files, checkpoints and the launcher."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

from ti import contract
from ti.storage import (
    DEFAULT_MAX_EXTRACT_BYTES,
    ObjectInfo,
    StorageError,
    extract_tarball,
    store_for,
)
from ti.toolkit.layout import Layout
from ti.toolkit.report import write_message

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
RESTORED_CHECKPOINTS = "checkpoints-restored.json"

# The three containers of a pod run as different users (fetch and upload as the toolkit's, the script
# as its image's), sharing the pod's group (fsGroup). So what fetch creates is group-writable, and its
# folders are setgid: whatever anyone creates below them belongs to that group too.
UMASK = 0o002
SHARED_DIR_MODE = 0o2775
# Our bookkeeping folder is writable by every user, whatever its groups: the launcher's exit code (what
# ends the upload step's wait) must never fail on permissions. Only this pod's containers see it.
OPEN_DIR_MODE = 0o2777
_SHARED_DIRS = (
    contract.INPUT_DIR,
    contract.INPUT_DATA_DIR,
    contract.INPUT_CONFIG_DIR,
    contract.CODE_DIR,
    contract.MODEL_DIR,
    contract.OUTPUT_DIR,
    contract.OUTPUT_DATA_DIR,
)

Say = Callable[[str], None]


class FetchError(StorageError):
    """A download the job's spec asked for cannot be done; the message names what and where."""


def _json(env: Mapping[str, str], name: str, default: object) -> object:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise FetchError(f"{name} is not valid JSON: {raw[:200]!r}") from None


def _hosts(env: Mapping[str, str]) -> list[str]:
    value = _json(env, contract.TM_HOSTS, [])
    return [str(h) for h in value] if isinstance(value, list) else [str(value)]


def _mb_per_s(nbytes: int, seconds: float) -> str:
    return f"{nbytes / 1e6:.1f} MB in {seconds:.1f}s ({nbytes / 1e6 / max(seconds, 1e-3):.0f} MB/s)"


def make_tree(layout: Layout, *, checkpoints: bool) -> None:
    """The /opt/ml folders, with the modes every container's user can work with."""
    dirs = [(layout.path(d), SHARED_DIR_MODE) for d in _SHARED_DIRS]
    if checkpoints:
        dirs.append((layout.checkpoints, SHARED_DIR_MODE))
    dirs.append((layout.ti_dir, OPEN_DIR_MODE))
    for path, mode in dirs:
        path.mkdir(parents=True, exist_ok=True)
        # Explicit, not through the umask: mkdir never sets the setgid bit itself.
        path.chmod(mode)


def install_launcher(layout: Layout) -> Path:
    """Copy launch.sh into the shared volume, where the main container's command expects it."""
    target = layout.path(contract.LAUNCHER)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = resources.files("ti.toolkit").joinpath("launch.sh").read_bytes()
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(source)
    tmp.chmod(0o755)
    os.replace(tmp, target)
    return target


def write_config(layout: Layout, env: Mapping[str, str], inputs: dict[str, str]) -> None:
    """hyperparameters.json, inputdataconfig.json and resourceconfig.json under input/config."""
    config_dir = layout.input_config
    config_dir.mkdir(parents=True, exist_ok=True)
    hps = _json(env, contract.TM_HPS, {})
    input_config = {
        name: {"uri": uri, "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
        for name, uri in sorted(inputs.items())
    }
    resource_config = {
        "current_host": env.get(contract.TM_CURRENT_HOST, ""),
        "hosts": _hosts(env),
        "num_gpus": int(env.get(contract.TM_NUM_GPUS) or 0),
        "num_cpus": int(float(env.get(contract.TM_NUM_CPUS) or 0)),
        "network_interface_name": "eth0",
    }
    for name, value in (
        (contract.HYPERPARAMETERS_FILE, hps),
        (contract.INPUT_DATA_CONFIG_FILE, input_config),
        (contract.RESOURCE_CONFIG_FILE, resource_config),
    ):
        (config_dir / name).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def fetch_source(layout: Layout, uri: str, env: Mapping[str, str], say: Say) -> None:
    """sourcedir.tar.gz → code/, extracted safely; a prefix (not an archive) is copied as it is."""
    start = time.monotonic()
    store = store_for(uri, env)
    layout.code.mkdir(parents=True, exist_ok=True)
    if not uri.endswith(_ARCHIVE_SUFFIXES):
        objects = store.download_prefix(uri, layout.code)
        if not objects:
            raise FetchError(f"source: nothing to download at {uri} (the prefix is empty or does not exist)")
        say(
            f"source {uri}: {len(objects)} files, {_mb_per_s(sum(o.size for o in objects), time.monotonic() - start)}"
        )
        return
    limit = int(env.get(contract.TI_SOURCE_MAX_BYTES) or DEFAULT_MAX_EXTRACT_BYTES)
    archive = layout.ti_dir / "sourcedir.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        info = store.stat(uri)
        if info is None:
            raise FetchError(f"source: no archive at {uri}")
        if info.size > limit:
            raise FetchError(f"source: {uri} is {info.size} bytes, over the {limit}-byte limit")
        store.download_file(uri, archive)
        names = extract_tarball(archive, layout.code, max_bytes=limit)
    finally:
        archive.unlink(missing_ok=True)
    say(f"source {uri}: {len(names)} entries, {_mb_per_s(info.size, time.monotonic() - start)}")


def fetch_channel(layout: Layout, name: str, uri: str, env: Mapping[str, str], say: Say) -> list[ObjectInfo]:
    if not re.match(contract.CHANNEL_NAME_PATTERN, name):
        raise FetchError(f"channel {name!r}: invalid name (letters, digits and _, starting with a letter)")
    start = time.monotonic()
    dest = layout.channel(name)
    try:
        objects = store_for(uri, env).download_prefix(uri, dest)
    except StorageError as error:
        raise FetchError(f"channel {name!r} ({uri}): {error}") from None
    if not objects:
        raise FetchError(
            f"channel {name!r}: nothing to download at {uri} (the prefix is empty or does not exist)"
        )
    size = sum(o.size for o in objects)
    say(f"channel {name} {uri}: {len(objects)} objects, {_mb_per_s(size, time.monotonic() - start)}")
    return objects


def restore_checkpoints(layout: Layout, uri: str, env: Mapping[str, str], say: Say) -> None:
    """checkpointPath → checkpoints/; a first run finds nothing, which is fine."""
    dest = layout.checkpoints
    dest.mkdir(parents=True, exist_ok=True)
    objects = store_for(uri, env).download_prefix(uri, dest)
    # The upload step starts its sync from this list, so restored files are not uploaded again.
    restored = {}
    for info in objects:
        stat = (dest / info.relative).stat()
        restored[info.relative] = [stat.st_size, stat.st_mtime_ns]
    (layout.ti_dir / RESTORED_CHECKPOINTS).write_text(json.dumps(restored), encoding="utf-8")
    say(f"checkpoints {uri}: restored {len(objects)} files" if objects else f"checkpoints {uri}: none yet")


def fetch(env: Mapping[str, str] | None = None, say: Say = print) -> None:
    """Everything the main container needs before it starts, under the ML root (contract.ML_ROOT_ENV)."""
    env = dict(os.environ if env is None else env)
    layout = Layout.from_env(env)
    checkpoint_path = env.get(contract.TI_CHECKPOINT_PATH, "").strip()
    make_tree(layout, checkpoints=bool(checkpoint_path))
    inputs = _json(env, contract.TI_INPUTS, {})
    if not isinstance(inputs, dict):
        raise FetchError(f"{contract.TI_INPUTS} must be a JSON object of channel name to URI")
    install_launcher(layout)
    write_config(layout, env, {str(k): str(v) for k, v in inputs.items()})
    source = env.get(contract.TI_SOURCE_DIR, "").strip()
    if source:
        fetch_source(layout, source, env, say)
    for name, uri in sorted(inputs.items()):
        fetch_channel(layout, str(name), str(uri), env, say)
    if checkpoint_path:
        restore_checkpoints(layout, checkpoint_path, env, say)


def main(env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    layout = Layout.from_env(env)
    started = time.monotonic()
    os.umask(UMASK)  # this process is the init container: the whole of it creates shared files

    def say(text: str) -> None:
        print(f"ti-toolkit fetch: {text}", flush=True)

    try:
        fetch(env, say)
    except Exception as error:  # whatever it was, the pod's status must say it
        message = str(error) if isinstance(error, StorageError) else f"{type(error).__name__}: {error}"
        say(f"failed: {message}")
        write_message(message, layout.path(contract.FETCH_FAILURE_FILE), env)
        return contract.DOWNLOAD_FAILED_EXIT_CODE
    say(f"done in {time.monotonic() - started:.1f}s")
    return 0
