"""TensorBoard on this machine, on a local copy of a job's event files kept in sync while it runs.

Event files reach the object store two ways: the checkpoint directory (synced during training when the
job has a checkpoint_path) and output.tar.gz (uploaded at the end, holding TM_OUTPUT_DATA_DIR). Local
mode needs no copy: TensorBoard reads the job's work directory directly.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from ti import contract
from ti.session import Session

SYNC_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TensorBoard:
    """A TensorBoard process on `logdir`, refreshed from `sources` (prefixes) and `archives` (tar.gz)."""

    def __init__(
        self,
        logdir: Path,
        session: Session | None = None,
        sources: list[str] | None = None,
        archives: list[str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.logdir = logdir
        self.session = session
        self.sources = sources or []
        self.archives = archives or []
        self.out = out
        self.port = 0
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_job(cls, body: dict[str, Any], session: Session, out: TextIO | None = None) -> TensorBoard:
        spec, name = body["spec"], body["metadata"]["name"]
        logdir = Path(tempfile.mkdtemp(prefix=f"ti-tensorboard-{name}-"))
        sources = [spec["checkpointPath"]] if spec.get("checkpointPath") else []
        archives = [contract.output_data_uri(spec["outputPath"], name)]
        return cls(logdir, session, sources, archives, out)

    def start(self) -> TensorBoard:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.sync_once()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir)]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        try:
            self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as err:
            self._say(f"TensorBoard could not start ({err}); pip install tensorboard")
            return self
        atexit.register(self.stop)
        self._say(f"TensorBoard at {self.url} (event files in {self.logdir})")
        if self.sources or self.archives:
            self._thread = threading.Thread(target=self._sync_loop, daemon=True, name="ti-tensorboard-sync")
            self._thread.start()
        return self

    def _say(self, text: str) -> None:
        out = self.out or sys.stdout
        out.write(text + "\n")
        out.flush()

    def _sync_loop(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            self.sync_once()

    def sync_once(self) -> None:
        """Copy new event files from the sources; unpack the archives once they exist."""
        if self.session is None:
            return
        for index, uri in enumerate(self.sources):
            with contextlib.suppress(Exception):
                self.session.download_prefix(uri, self.logdir / f"checkpoints-{index}")
        for index, uri in enumerate(self.archives):
            with contextlib.suppress(Exception):
                self._unpack(uri, self.logdir / f"output-{index}")

    def _unpack(self, uri: str, dest: Path) -> None:
        from ti.storage.archive import extract_tarball

        assert self.session is not None
        if dest.exists() or not self.session.exists(uri):
            return
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "output.tar.gz"
            self.session.store(uri).download_file(uri, archive)
            extract_tarball(archive, dest)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Whether TensorBoard answers on its port within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.3)
        return False

    def remove_copy(self) -> None:
        shutil.rmtree(self.logdir, ignore_errors=True)
