"""The upload step (second container): waits for the main container, then stores its results.

Order matters: the log first (it explains everything else), then checkpoints and output data, and
the model last, only after a successful script and only when everything before it was stored. So a
failed upload never leaves a model object behind, and a visible model means a complete upload.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ti import contract
from ti.storage import StorageError, store_for, upload_dir
from ti.toolkit.checkpoints import CheckpointSync
from ti.toolkit.fetch import RESTORED_CHECKPOINTS, UMASK
from ti.toolkit.layout import Layout
from ti.toolkit.report import read_message, write_message

Say = Callable[[str], None]
DEFAULT_SYNC_SECONDS = 60
# After SIGTERM (pod deleted, job stopped), how long to wait for the launcher's exit code.
STOP_WAIT_SECONDS = 10.0
KILLED_EXIT_CODE = 143
# How long without the launcher's heartbeat (it beats every 2 s) before its container counts as ended.
# Why here and not in the operator: only this step can tell a wait for an exit code that will never
# come from a long upload after one that came; the operator sees both as "upload running" and could
# only cut off a large model's upload.
LAUNCHER_GRACE_SECONDS = 30.0
# How long a launcher may take to beat at all. The kubelet starts the main container before this one,
# except when the main image's pull fails: then this one runs first, and the main container may still
# start on a later pull. So the wait is long (the renderer passes the job's schedulingTimeoutSeconds,
# by which the operator fails a pod whose image never comes); it ends a pod whose launcher could never
# run, e.g. an image without /bin/sh.
LAUNCHER_START_SECONDS = 600.0


@dataclass
class Settings:
    job: str
    output_path: str
    checkpoint_path: str
    chief: bool
    host: str
    metric_definitions: list[dict[str, str]]
    sync_seconds: float
    env: dict[str, str] = field(repr=False)
    launcher_grace_seconds: float = LAUNCHER_GRACE_SECONDS
    launcher_start_seconds: float = LAUNCHER_START_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        role = env.get(contract.TI_INSTANCE_ROLE) or contract.ROLE_WORKER
        index = int(env.get(contract.TI_INSTANCE_INDEX) or 0)
        try:
            definitions = json.loads(env.get(contract.TI_METRIC_DEFINITIONS) or "[]")
        except ValueError:
            definitions = []
        return cls(
            job=env.get(contract.TI_JOB_NAME, ""),
            output_path=env.get(contract.TI_OUTPUT_PATH, "").strip(),
            checkpoint_path=env.get(contract.TI_CHECKPOINT_PATH, "").strip(),
            chief=role == contract.ROLE_WORKER and index == 0,
            host=env.get(contract.TM_CURRENT_HOST) or env.get("HOSTNAME") or socket.gethostname(),
            metric_definitions=[d for d in definitions if isinstance(d, dict)],
            sync_seconds=float(env.get(contract.TI_CHECKPOINT_SYNC_SECONDS) or DEFAULT_SYNC_SECONDS),
            env=dict(env),
            launcher_grace_seconds=float(
                env.get(contract.TI_LAUNCHER_GRACE_SECONDS) or LAUNCHER_GRACE_SECONDS
            ),
            launcher_start_seconds=float(
                env.get(contract.TI_LAUNCHER_START_SECONDS) or LAUNCHER_START_SECONDS
            ),
        )


def final_metrics(log: Path, definitions: list[dict[str, str]]) -> dict[str, float]:
    """The last value of each metric in the log: the regex's first group (or whole match) per line."""
    compiled: list[tuple[str, re.Pattern[str]]] = []
    for definition in definitions:
        name = definition.get("name") or definition.get("Name")
        regex = definition.get("regex") or definition.get("Regex")
        if not name or not regex:
            continue
        try:
            compiled.append((name, re.compile(regex)))
        except re.error:
            continue
    values: dict[str, float] = {}
    if not compiled or not log.is_file():
        return values
    with open(log, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            for name, pattern in compiled:
                match = pattern.search(line)
                if match is None:
                    continue
                text = match.group(1) if pattern.groups else match.group(0)
                try:
                    values[name] = float(text)
                except (TypeError, ValueError):
                    continue
    return values


class Uploader:
    def __init__(self, env: Mapping[str, str], say: Say, stop: threading.Event | None = None) -> None:
        self.settings = Settings.from_env(env)
        self.layout = Layout.from_env(env)
        self.say = say
        self.stop = stop or threading.Event()
        self.errors: list[str] = []
        self.lost: str | None = None  # why the main container's exit code will never come
        self.sync: CheckpointSync | None = None
        # The chief alone writes the job's checkpoints (TensorFlow's own convention): other
        # instances restore them but never overwrite them.
        if self.settings.checkpoint_path and self.settings.chief:
            seen = CheckpointSync.load_seen(self.layout.ti_dir / RESTORED_CHECKPOINTS)
            store = store_for(self.settings.checkpoint_path, self.settings.env)
            self.sync = CheckpointSync(store, self.layout.checkpoints, self.settings.checkpoint_path, seen)

    def wait_for_exit(self, poll_seconds: float) -> int | None:
        """The main container's exit code, syncing checkpoints every sync_seconds meanwhile; None when
        the launcher never started or was killed (`self.lost` says which): its code will never come."""
        exit_file = self.layout.path(contract.EXIT_CODE_FILE)
        started = time.monotonic()
        next_sync = started + self.settings.sync_seconds
        stop_deadline: float | None = None
        while True:
            code = self._read_exit(exit_file)
            if code is not None:
                return code
            lost = self._launcher_lost(started)
            if lost is not None:
                code = self._read_exit(exit_file)  # written just before its last beat?
                if code is not None:
                    return code
                self.lost = lost
                self.say(lost)
                return None
            now = time.monotonic()
            if self.stop.is_set():
                stop_deadline = stop_deadline or now + STOP_WAIT_SECONDS
                if now >= stop_deadline:
                    self.say("stopped before the training script ended")
                    return KILLED_EXIT_CODE
            if self.sync is not None and now >= next_sync:
                self._periodic_sync()
                next_sync = time.monotonic() + self.settings.sync_seconds
            time.sleep(poll_seconds)

    def _launcher_lost(self, started: float) -> str | None:
        """Why the launcher will write no exit code, or None while it may still."""
        beat = self.layout.path(contract.HEARTBEAT_FILE)
        grace = self.settings.launcher_grace_seconds
        try:
            mtime = beat.stat().st_mtime
            steady = beat.read_text().strip() == "steady"  # an image without `sleep`: no beats
        except OSError:
            wait = self.settings.launcher_start_seconds
            if time.monotonic() - started < wait:
                return None
            return (
                f"the training container's launcher did not start within {wait:.0f}s (no {beat}): "
                f"its image could not run /bin/sh {contract.LAUNCHER}, or its user cannot write "
                f"{self.layout.ti_dir}"
            )
        age = time.time() - mtime
        if steady or age < grace:
            return None
        return (
            f"the training container's launcher stopped {age:.0f}s ago without writing an exit code: "
            "its container was killed or ended (the kubelet's status has its exit code)"
        )

    @staticmethod
    def _read_exit(path: Path) -> int | None:
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        try:
            return int(text)
        except ValueError:
            return None  # mid-write on a filesystem without atomic rename; read again

    def _periodic_sync(self) -> None:
        assert self.sync is not None
        try:
            count = self.sync.sync()
        except StorageError as error:
            # Loud, and retried next period: a silently stopped sync is what loses a resumed job's work.
            self.say(f"WARNING: checkpoint sync to {self.settings.checkpoint_path} failed: {error}")
            return
        if count:
            self.say(f"checkpoints: synced {count} files to {self.settings.checkpoint_path}")

    def _step(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (StorageError, OSError) as error:
            self.errors.append(f"{what}: {error}")
            self.say(f"{what} failed: {error}")

    def finish(self, code: int | None) -> int:
        """Store the results of a main container that exited with `code` (None: unknown, a failure);
        return this step's exit code."""
        s, layout = self.settings, self.layout
        log = layout.path(contract.LOG_FILE)
        if s.output_path:
            log_uri = contract.log_uri(s.output_path, s.job, s.host)
            store = store_for(log_uri, s.env)
            if log.is_file():
                self._step("log", lambda: store.upload_file(log, log_uri))
        if self.sync is not None:
            self._step("checkpoints", self.sync.sync)
        metrics = final_metrics(log, s.metric_definitions)
        if s.output_path and s.chief:
            output_uri = contract.output_data_uri(s.output_path, s.job)
            self._step("output data", lambda: self._upload_dir(layout.output_data, output_uri))
            if code == 0 and not self.errors:
                model_uri = contract.model_uri(s.output_path, s.job)
                self._step("model", lambda: self._upload_dir(layout.model, model_uri))
        return self._report(code, metrics)

    def _upload_dir(self, src: Path, uri: str) -> None:
        src.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        info = upload_dir(store_for(uri, self.settings.env), src, uri, tmp_dir=self.layout.ti_dir)
        self.say(f"uploaded {uri} ({info.size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s)")

    def _report(self, code: int | None, metrics: dict[str, float]) -> int:
        layout = self.layout
        if metrics:
            path = layout.path(contract.METRICS_FILE)
            path.write_text(json.dumps(metrics, sort_keys=True), encoding="utf-8")
        if code is None:
            # The main container's own status (exit code, termination message) tells the operator why
            # it ended; this step says only that no result could be trusted.
            message = f"{contract.UPLOAD_FAILED_REASON}: {self.lost}"
            if self.errors:
                message += "; " + "; ".join(self.errors)
            write_message(message, layout.path(contract.UPLOAD_FAILURE_FILE), self.settings.env)
            return contract.UPLOAD_FAILED_EXIT_CODE
        if code != 0:
            # The script's own reason stays the instance's story; an upload problem is appended.
            reason = (
                read_message(layout.path(contract.FAILURE_FILE))
                or f"the training script exited with code {code}"
            )
            if self.errors:
                reason += f"\n{contract.UPLOAD_FAILED_REASON} as well: " + "; ".join(self.errors)
            write_message(reason, None, self.settings.env)
            return code
        if self.errors:
            message = f"{contract.UPLOAD_FAILED_REASON}: " + "; ".join(self.errors)
            write_message(message, layout.path(contract.UPLOAD_FAILURE_FILE), self.settings.env)
            return contract.UPLOAD_FAILED_EXIT_CODE
        write_message(json.dumps({"metrics": metrics}, sort_keys=True), None, self.settings.env)
        return 0


def main(env: Mapping[str, str] | None = None, poll_seconds: float = 0.5) -> int:
    env = dict(os.environ if env is None else env)
    stop = threading.Event()

    def say(text: str) -> None:
        print(f"ti-toolkit upload: {text}", flush=True)

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    layout = Layout.from_env(env)
    os.umask(UMASK)
    try:
        uploader = Uploader(env, say, stop)
        code = uploader.wait_for_exit(poll_seconds)
        if code is not None:
            say(f"the training script exited with code {code}")
        result = uploader.finish(code)
    except Exception as error:
        # Settings so wrong that nothing could start, or a bug of ours: still never a success.
        detail = str(error) if isinstance(error, StorageError) else f"{type(error).__name__}: {error}"
        message = f"{contract.UPLOAD_FAILED_REASON}: {detail}"
        say(message)
        write_message(message, layout.path(contract.UPLOAD_FAILURE_FILE), env)
        return contract.UPLOAD_FAILED_EXIT_CODE
    say("done" if result == 0 else f"exiting with code {result}")
    return result
