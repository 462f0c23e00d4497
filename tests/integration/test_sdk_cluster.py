"""The SDK against the real control plane, the operator and the loopback object store.

kwok runs no containers: a `Kubelet` helper patches pod status as a kubelet would and writes the
pods' logs to files that kwok serves through the real pods/log endpoint.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.sdk_cluster_support import Kubelet, enable_kwok_logs, wait_for
from tests.support.controlplane import REPO, ControlPlane
from tests.support.objectstore import LoopbackObjectStore
from ti.job import TrainingJobFailed, TrainingJobStopped
from ti.session import Session
from ti.tensorflow import TensorFlow

pytestmark = pytest.mark.integration
TI = str(Path(sys.executable).parent / "ti")


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane, crd: Path) -> ControlPlane:
    enable_kwok_logs(control_plane)
    return control_plane


@pytest.fixture
def kubeconfig(plane: ControlPlane, namespace: str, tmp_path: Path) -> Path:
    """The plane's kubeconfig with the test's namespace as the context's, as a user's would be."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def session(kubeconfig: Path, object_store: LoopbackObjectStore) -> Session:
    return Session(
        kubeconfig=kubeconfig,
        cos_endpoint=object_store.endpoint,
        cos_region=object_store.region,
        secret_id=object_store.secret_id,
        secret_key=object_store.secret_key,
    )


@pytest.fixture
def operator(plane: ControlPlane, start_operator: Callable[..., Any]) -> None:
    """The operator (tests/support/operator.py) watching the test's namespace."""
    start_operator()


@pytest.fixture
def kubelet(plane: ControlPlane, namespace: str, tmp_path: Path) -> Kubelet:
    logdir = tmp_path / "pod-logs"
    logdir.mkdir()
    return Kubelet(plane, namespace, logdir)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    code = tmp_path / "gpu" / "code"
    (code / ".git").mkdir(parents=True)
    (code / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (code / "train.py").write_text("print('training')\n")
    (code / "model.py").write_text("LAYERS = 2\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def seed_estimator(session: Session, bucket: str, **extra: Any) -> TensorFlow:
    """The TI document's call, with a bucket of the loopback store."""
    args: dict[str, Any] = {
        "role": "default",
        "train_instance_count": 1,
        "train_instance_type": "ML.GN8.3XLARGE112",
        "py_version": "py3",
        "script_mode": True,
        "framework_version": "1.14.0",
        "entry_point": "train.py",
        "output_path": f"cos://{bucket}/path",
        "source_dir": "gpu/code",
    }
    args.update(extra)
    return TensorFlow(session=session, **args)


class Background:
    """Runs `fn` in a thread (the SDK waiting) while the test drives the pods in its own."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as err:
            self.error = err

    def join(self, timeout: float = 60) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still waiting after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


# ---- fit(wait=False) and attach ---------------------------------------------------------------------


def test_fit_without_wait_creates_exactly_the_expected_job(
    plane: ControlPlane,
    namespace: str,
    session: Session,
    bucket: str,
    object_store: LoopbackObjectStore,
    project: Path,
) -> None:
    est = seed_estimator(session, bucket, hyperparameters={"epochs": 2, "lr": 0.1})
    est.fit(f"cos://{bucket}/path/to/training/data", wait=False)
    name = est.latest_training_job.name
    assert name.startswith("tensorflow-")

    listed = json.loads(plane.kubectl("get", "tftj", "-n", namespace, "-o", "json").stdout)["items"]
    assert [j["metadata"]["name"] for j in listed] == [name]
    job = listed[0]
    source = f"cos://{bucket}/path/{name}/source/sourcedir.tar.gz"
    assert job["spec"] == {
        "role": "default",
        "instanceType": "ML.GN8.3XLARGE112",
        "instanceCount": 1,
        "frameworkVersion": "1.14.0",
        "pyVersion": "py3",
        "entryPoint": "train.py",
        "sourceDir": source,
        "hyperparameters": {"epochs": "2", "lr": "0.1"},
        "inputs": {"training": f"cos://{bucket}/path/to/training/data"},
        "outputPath": f"cos://{bucket}/path",
        "distribution": {"type": "multiWorkerMirrored"},
        "env": [],
        "volumeSizeGB": 30,
        "maxRunSeconds": 86400,
        "metricDefinitions": [],
        "runPolicy": job["spec"]["runPolicy"],
    }
    assert job["spec"]["runPolicy"]["stop"] is False

    assert object_store.keys(bucket) == [f"path/{name}/source/sourcedir.tar.gz"]
    data = object_store.client().get_object(Bucket=bucket, Key=f"path/{name}/source/sourcedir.tar.gz")["Body"]
    with tarfile.open(fileobj=io.BytesIO(data.get_raw_stream().read())) as tar:
        assert sorted(tar.getnames()) == ["model.py", "train.py"]
    assert est.model_data == f"cos://{bucket}/path/{name}/output/model.tar.gz"


def test_attach_from_another_process_rebuilds_the_arguments(
    namespace: str, session: Session, kubeconfig: Path, bucket: str, project: Path
) -> None:
    est = seed_estimator(
        session,
        bucket,
        train_instance_count=2,
        hyperparameters={"epochs": "3"},
        base_job_name="mnist",
        distributions={"parameter_server": {"enabled": True}},
        metric_definitions=[{"Name": "acc", "Regex": "acc=([0-9.]+)"}],
        checkpoint_path=f"cos://{bucket}/ckpt",
        train_max_run=7200,
    )
    est.fit({"train": f"cos://{bucket}/train"}, wait=False)
    name = est.latest_training_job.name

    # The TI document's own line, in a fresh interpreter that knows the cluster only through KUBECONFIG.
    script = (
        "import json, sys\n"
        "from ti.tensorflow import TensorFlow\n"
        "tf_estimator = TensorFlow.attach(training_job_name=sys.argv[1], wait=False)\n"
        "print(json.dumps({'args': tf_estimator.arguments(), 'job': tf_estimator.latest_training_job.name}))\n"
    )
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(project)}
    done = subprocess.run(
        [sys.executable, "-c", script, name], capture_output=True, text=True, env=env, timeout=120, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    attached = json.loads(done.stdout.strip().splitlines()[-1])
    expected = est.arguments()
    expected["source_dir"] = f"cos://{bucket}/path/{name}/source/sourcedir.tar.gz"
    assert attached == {"args": json.loads(json.dumps(expected)), "job": name}
    assert attached["args"]["distributions"] == {"parameter_server": {"enabled": True, "count": 1}}
    assert attached["args"]["base_job_name"] == "mnist"


# ---- waiting: completion, failure, logs, restarts, stop ---------------------------------------------


def test_fit_waits_until_completed_and_streams_the_log(
    operator: None,
    session: Session,
    kubelet: Kubelet,
    bucket: str,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    est = seed_estimator(session, bucket)
    fit = Background(lambda: est.fit(f"cos://{bucket}/data"))  # returns once the job Completed

    job = wait_for(lambda: session.list_jobs(), "the job")[0]["metadata"]["name"]
    (pod,) = kubelet.wait_pods(job, 1)
    kubelet.log(pod, "epoch 1 loss=0.9")
    kubelet.train(pod)
    kubelet.log(pod, "epoch 2 loss=0.5", "saved model")
    # It ends right after its last lines: the final read must still deliver them.
    kubelet.end(pod, 0, result=json.dumps({"metrics": {"accuracy": 0.93}}))
    fit.join()

    name = est.latest_training_job.name
    assert name == job
    out = capsys.readouterr().out
    for line in ("epoch 1 loss=0.9", "epoch 2 loss=0.5", "saved model"):
        assert out.count(f"[worker-0] {line}\n") == 1, out
    assert f"training job {name}: Training" in out
    assert f"training job {name}: Completed" in out
    body = est.latest_training_job.describe()
    assert body["status"]["phase"] == "Completed"
    assert body["status"]["metrics"] == {"accuracy": 0.93}
    assert est.model_data == f"cos://{bucket}/path/{name}/output/model.tar.gz"


def test_wait_raises_with_the_reason_when_the_job_fails(
    operator: None, session: Session, kubelet: Kubelet, bucket: str, project: Path
) -> None:
    est = seed_estimator(session, bucket)
    est.fit(f"cos://{bucket}/data", wait=False)
    name = est.latest_training_job.name
    waiting = Background(lambda: est.latest_training_job.wait(out=io.StringIO()))

    (pod,) = kubelet.wait_pods(name, 1)
    kubelet.log(pod, "loading data", "Traceback (most recent call last):", "ValueError: labels are missing")
    kubelet.train(pod)
    kubelet.end(pod, 1, message="ValueError: labels are missing")
    with pytest.raises(TrainingJobFailed) as caught:
        waiting.join()

    err = caught.value
    assert err.reason == "TrainingFailed"
    assert "ValueError: labels are missing" in (err.failure_reason or "")
    assert f"training job {name} failed (TrainingFailed): ValueError: labels are missing" in str(err)
    assert "[worker-0] loading data" in str(err)  # the last log lines travel with the error
    assert err.log_tail["worker-0"][-1] == "ValueError: labels are missing"


def test_logs_of_two_instances_follow_a_restart_without_loss_or_doubles(
    operator: None, session: Session, kubelet: Kubelet, bucket: str, project: Path
) -> None:
    est = seed_estimator(session, bucket, train_instance_count=2)
    est.fit(f"cos://{bucket}/data", wait=False)
    name = est.latest_training_job.name
    out = io.StringIO()
    waiting = Background(lambda: est.latest_training_job.wait(out=out))

    def printed(*lines: str) -> Callable[[], bool]:
        return lambda: all(line in out.getvalue() for line in lines)

    first = kubelet.wait_pods(name, 2, attempt=0)
    for pod in first:
        kubelet.train(pod)
    for step in range(3):
        for i, pod in enumerate(first):
            kubelet.log(pod, f"attempt 0 worker {i} step {step}")
    wait_for(
        printed("[worker-0] attempt 0 worker 0 step 2", "[worker-1] attempt 0 worker 1 step 2"), out.getvalue
    )
    kubelet.forget_logs(*first)
    kubelet.end(first[1], 137)  # killed: the platform's fault, so all instances restart
    second = kubelet.wait_pods(name, 2, attempt=1)
    for pod in second:
        kubelet.train(pod)
    for step in range(3):
        for i, pod in enumerate(second):
            kubelet.log(pod, f"attempt 1 worker {i} step {step}")
    wait_for(
        printed("[worker-0] attempt 1 worker 0 step 2", "[worker-1] attempt 1 worker 1 step 2"), out.getvalue
    )
    for pod in second:
        kubelet.log(pod, "done")
        kubelet.end(pod, 0)
    body = waiting.join()

    text = out.getvalue()
    assert body["status"]["restartCount"] == 1
    for attempt in (0, 1):
        for worker in (0, 1):
            for step in range(3):
                line = f"[worker-{worker}] attempt {attempt} worker {worker} step {step}\n"
                assert text.count(line) == 1, text
    assert text.count("[worker-0] done\n") == 1 and text.count("[worker-1] done\n") == 1, text
    lines = [line for line in text.splitlines() if line.startswith("[worker-0] attempt")]
    assert lines == sorted(lines), "one instance's lines keep their order"


def test_stop_ends_in_stopped(
    operator: None, session: Session, kubelet: Kubelet, bucket: str, project: Path
) -> None:
    est = seed_estimator(session, bucket)
    est.fit(f"cos://{bucket}/data", wait=False)
    job = est.latest_training_job
    (pod,) = kubelet.wait_pods(job.name, 1)
    kubelet.train(pod)
    wait_for(lambda: job.phase == "Training", "phase Training")
    body = job.stop(wait=True)
    assert body["status"]["phase"] == "Stopped"
    with pytest.raises(TrainingJobStopped, match="stopped"):
        job.wait(logs=False, out=io.StringIO())


# ---- the CLI ----------------------------------------------------------------------------------------------


def ti(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)}
    return subprocess.run([TI, *args], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_cli_commands(
    plane: ControlPlane,
    operator: None,
    namespace: str,
    session: Session,
    kubeconfig: Path,
    kubelet: Kubelet,
    bucket: str,
    project: Path,
) -> None:
    done_job = seed_estimator(session, bucket, base_job_name="done", train_instance_count=2)
    done_job.fit(f"cos://{bucket}/data", wait=False)
    done = done_job.latest_training_job.name
    pods = kubelet.wait_pods(done, 2)
    for i, pod in enumerate(pods):
        kubelet.train(pod)
        kubelet.log(pod, f"hello from {i}", f"bye from {i}")
    for pod in pods:
        kubelet.end(pod, 0)
    wait_for(lambda: done_job.latest_training_job.phase == "Completed", "Completed")

    running_job = seed_estimator(session, bucket, base_job_name="running")
    running_job.fit(f"cos://{bucket}/data", wait=False)
    running = running_job.latest_training_job.name
    (pod,) = kubelet.wait_pods(running, 1)
    kubelet.train(pod)
    wait_for(lambda: running_job.latest_training_job.phase == "Training", "Training")

    listed = ti(kubeconfig, "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert listed.stdout.split()[:5] == ["NAME", "PHASE", "INSTANCES", "AGE", "REASON"]
    assert rows[done][1:5] == ["Completed", "2", "x", "ML.GN8.3XLARGE112"]
    assert rows[running][1] == "Training"
    names = ti(kubeconfig, "-n", namespace, "list", "-o", "name")
    assert sorted(names.stdout.split()) == sorted([done, running])
    # The same command as a kubectl plugin (kubectl finds kubectl-ti on PATH).
    plugin = subprocess.run(
        [str(plane.bin / "kubectl"), "ti", "list", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"KUBECONFIG": str(kubeconfig), "PATH": f"{Path(TI).parent}:/usr/bin:/bin", "HOME": str(project)},
    )
    assert plugin.returncode == 0, plugin.stderr
    assert sorted(plugin.stdout.split()) == sorted([done, running])

    described = ti(kubeconfig, "describe", done)
    assert described.returncode == 0, described.stderr
    assert f"Model:             cos://{bucket}/path/{done}/output/model.tar.gz" in described.stdout
    assert "Phase:             Completed" in described.stdout
    assert f"{done}-worker-1" in described.stdout and "Succeeded" in described.stdout
    as_json = json.loads(ti(kubeconfig, "describe", done, "-o", "json").stdout)
    assert as_json["status"]["phase"] == "Completed"

    logs = ti(kubeconfig, "logs", done)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == [
        "[worker-0] hello from 0",
        "[worker-0] bye from 0",
        "[worker-1] hello from 1",
        "[worker-1] bye from 1",
    ]
    only = ti(kubeconfig, "logs", done, "--instance", "1")
    assert only.stdout.splitlines() == ["[worker-1] hello from 1", "[worker-1] bye from 1"]
    followed = ti(kubeconfig, "logs", "-f", done)
    assert followed.returncode == 0 and followed.stdout.count("[worker-0] hello from 0") == 1

    attached = ti(kubeconfig, "attach", done, "--no-logs")
    assert attached.returncode == 0, attached.stderr
    assert f"model: cos://{bucket}/path/{done}/output/model.tar.gz" in attached.stdout

    missing = ti(kubeconfig, "describe", "no-such-job")
    assert missing.returncode == 3
    assert "training job 'no-such-job' not found" in missing.stderr

    stopped = ti(kubeconfig, "stop", "--wait", running)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"training job {running}: Stopped"
    again = ti(kubeconfig, "attach", running)
    assert again.returncode == 5
    assert "stopped" in again.stderr

    unreachable = subprocess.run(
        [TI, "--kubeconfig", str(kubeconfig.parent / "nowhere"), "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 4
    assert "kubeconfig" in unreachable.stderr
