"""The TI document's SDK code on the real node: `TensorFlow(...).fit(...)` with a CPU instance type creates the
job, streams the real kubelet's logs and returns once the model is uploaded; `fit(wait=False)` then
`TensorFlow.attach` from another process follows the same job to its end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.controlplane import REPO, ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from tests.support.operator import OperatorProcess
from tests.support.realnode import RealNode
from ti.session import Session
from ti.tensorflow import TensorFlow

pytestmark = [pytest.mark.integration, pytest.mark.training]

ATTACH = """
import sys
from ti.session import Session
from ti.tensorflow import TensorFlow
session = Session(kubeconfig=sys.argv[2], cos_endpoint=sys.argv[3])
est = TensorFlow.attach(sys.argv[1], session=session)
print("attached model:", est.model_data)
"""


@pytest.fixture
def kubeconfig(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Path:
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_seed_call_with_a_cpu_instance_type_trains_on_the_real_node_and_attach_follows_another(
    real_node: RealNode,
    control_plane: ControlPlane,
    namespace: str,
    object_store: LoopbackObjectStore,
    bucket: str,
    start_operator: Callable[..., OperatorProcess],
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The SDK checks the instance type against the catalog the operator has (the platform's file).
    monkeypatch.setenv("TI_CATALOG_FILE", str(real_node.catalog))
    monkeypatch.chdir(REPO)
    real_node.storage_secret(namespace, object_store)
    real_node.upload_example(
        REPO / "examples" / "keras-single", object_store, bucket, "ti-examples/keras-single"
    )
    operator = start_operator(**real_node.operator_env(object_store))
    session = Session(
        kubeconfig=kubeconfig,
        cos_endpoint=object_store.endpoint,
        cos_region=object_store.region,
        secret_id=object_store.secret_id,
        secret_key=object_store.secret_key,
    )
    data = f"cos://{bucket}/ti-examples/data"

    def seed() -> TensorFlow:
        return TensorFlow(
            role="default",
            train_instance_count=1,
            train_instance_type=real_node.instance_type,
            py_version="py3",
            script_mode=True,
            framework_version="2.16",
            entry_point="train.py",
            source_dir="examples/keras-single",
            output_path=f"cos://{bucket}/seed/output",
            hyperparameters={"epochs": 3, "batch_size": 64},
            session=session,
        )

    est = seed()
    est.fit({"train": f"{data}/train", "test": f"{data}/test"})
    streamed = capfd.readouterr().out
    name = est.latest_training_job.name
    for epoch in (1, 2, 3):
        assert f"epoch {epoch}: loss=" in streamed, streamed[-3000:]
    model = f"seed/output/{name}/output/model.tar.gz"
    assert model in object_store.keys(bucket, "seed/output/"), object_store.keys(bucket)
    assert est.model_data == f"cos://{bucket}/{model}"
    assert operator.alive(), operator.tail()

    later = seed()
    later.fit({"train": f"{data}/train"}, wait=False)
    other = later.latest_training_job.name
    attached = subprocess.run(
        [sys.executable, "-c", ATTACH, other, str(kubeconfig), object_store.endpoint],
        capture_output=True, text=True, timeout=420, cwd=REPO,
        env={**control_plane.env, "TI_CATALOG_FILE": str(real_node.catalog)},
    )  # fmt: skip
    assert attached.returncode == 0, attached.stderr[-3000:]
    assert "epoch 3: loss=" in attached.stdout, attached.stdout[-3000:]
    assert f"attached model: cos://{bucket}/seed/output/{other}/output/model.tar.gz" in attached.stdout
