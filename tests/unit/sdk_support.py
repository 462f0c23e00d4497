"""An injected Session for SDK unit tests: records every call, so a test can show nothing was created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ti.session import Session

COS = "cos://models-1250000000"


class RecordingSession(Session):
    """Every cluster or storage call is recorded; creating a job stores its body."""

    def __init__(self) -> None:
        super().__init__(namespace="team-a")
        self.calls: list[tuple[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, bytes] = {}

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create_job", body))
        self.jobs[body["metadata"]["name"]] = body
        return body

    def get_job(self, name: str) -> dict[str, Any]:
        self.calls.append(("get_job", name))
        return self.jobs[name]

    def upload_file(self, path: Path, uri: str, progress: Any = None) -> None:
        self.calls.append(("upload_file", uri))
        self.uploads[uri] = path.read_bytes()

    def list_pods(self, job_name: str) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list_pods", job_name))
        return [], "1"


def write_source(root: Path) -> Path:
    code = root / "gpu" / "code"
    code.mkdir(parents=True)
    (code / "train.py").write_text("print('training')\n")
    (code / "util.py").write_text("X = 1\n")
    return code


def seed_args(**overrides: Any) -> dict[str, Any]:
    """The TI document's constructor call, with a real bucket."""
    args: dict[str, Any] = {
        "role": "default",
        "train_instance_count": 1,
        "train_instance_type": "ML.GN8.3XLARGE112",
        "py_version": "py3",
        "script_mode": True,
        "framework_version": "1.14.0",
        "entry_point": "train.py",
        "output_path": f"{COS}/path",
        "source_dir": "gpu/code",
    }
    args.update(overrides)
    return args
