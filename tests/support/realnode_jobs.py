"""Jobs of a script of the test's own on the real node (tests/support/realnode.py): submit one, wait for
its end, read what it uploaded."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import jobs
from tests.support.controlplane import ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from tests.support.operator import OperatorProcess
from tests.support.realnode import RealNode


def script_job(
    real_node: RealNode,
    plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    tmp_path: Path,
    name: str,
    script: str,
    secret: str = "ti-cos-credentials",
    **spec: Any,
) -> str:
    """Submit a job that runs `script` as train.py on the real node (source uploaded to `bucket`, no
    channels); returns its outputPath. `spec` adds or replaces spec fields."""
    src = tmp_path / f"{name}.tar.gz"
    (tmp_path / "train.py").write_text(script)
    with tarfile.open(src, "w:gz") as tar:
        tar.add(tmp_path / "train.py", arcname="train.py")
    object_store.client().upload_file(Bucket=bucket, Key=f"src/{name}.tar.gz", LocalFilePath=str(src))
    manifest = jobs.job_manifest(
        name,
        role="default",
        instanceType=real_node.instance_type,
        frameworkVersion="2.16",
        sourceDir=f"cos://{bucket}/src/{name}.tar.gz",
        outputPath=f"cos://{bucket}/out",
        inputs={},
        storageSecretRef={"name": secret},
        **spec,
    )
    jobs.apply(plane, namespace, manifest)
    return f"cos://{bucket}/out"


def job_ended(plane: ControlPlane, namespace: str, name: str, op: OperatorProcess) -> Callable[[], Any]:
    def check() -> Any:
        assert op.alive(), op.tail()
        status = jobs.job(plane, namespace, name).get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed", "Stopped") else None

    return check


def read_object(object_store: LoopbackObjectStore, bucket: str, key: str) -> str:
    return str(
        object_store.client().get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read().decode()
    )
