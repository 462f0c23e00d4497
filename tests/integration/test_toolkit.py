"""The toolkit's steps as the pods run them: `python -m ti.toolkit fetch|upload` and launch.sh under
POSIX shells, against the loopback COS server."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ti import contract
from ti.storage import CosSettings, CosStore

from ..support.objectstore import LoopbackObjectStore

pytestmark = pytest.mark.integration

# Every shell a training image may have; `make setup` installs busybox (hack/system-deps.sh). A missing
# one fails its test instead of dropping it.
SHELLS = ["dash", "bash", "busybox"]


def run_toolkit(command: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "ti.toolkit", command],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tar_bytes(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buffer.getvalue()


class Pod:
    """One pod's /opt/ml (a temporary root) and the toolkit environment the renderer gives it."""

    def __init__(self, store: LoopbackObjectStore, bucket: str, root: Path, **env: str) -> None:
        self.root = root
        self.bucket = bucket
        self.env = {
            **store.env(),
            contract.ML_ROOT_ENV: str(root),
            contract.TERMINATION_LOG_ENV: str(root / "termination-log"),
            contract.TI_JOB_NAME: "job-a",
            contract.TI_OUTPUT_PATH: f"cos://{bucket}/out",
            contract.TI_INSTANCE_INDEX: "0",
            contract.TI_INSTANCE_ROLE: "worker",
            contract.TM_CURRENT_HOST: "job-a-worker-0",
            contract.TM_HOSTS: json.dumps(["job-a-worker-0"]),
            contract.TM_HPS: json.dumps({"epochs": "2", "lr": "0.1"}),
            contract.TM_NUM_GPUS: "0",
            contract.TM_NUM_CPUS: "2",
            # These tests play the launcher by writing its files, heartbeat aside: the upload step must
            # not take the silence for a launcher that died (tests of that set their own grace).
            contract.TI_LAUNCHER_GRACE_SECONDS: "600",
            contract.TI_LAUNCHER_START_SECONDS: "600",
            **env,
        }

    def path(self, contract_path: str) -> Path:
        return self.root / contract_path[len(contract.ML_ROOT) + 1 :]

    def termination(self) -> str:
        return (self.root / "termination-log").read_text()


@pytest.fixture
def cos(object_store: LoopbackObjectStore) -> CosStore:
    return CosStore(CosSettings.from_env(object_store.env()))


# ---- fetch -----------------------------------------------------------------------------------------


def test_fetch_lays_out_opt_ml(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path
) -> None:
    source = tar_bytes({"train.py": b"print('hi')\n", "lib/util.py": b"X = 1\n"})
    cos.put_bytes(source, f"cos://{bucket}/src/sourcedir.tar.gz")
    for i in range(3):
        cos.put_bytes(f"row {i}\n".encode(), f"cos://{bucket}/data/train/part-{i}.csv")
    cos.put_bytes(b"test\n", f"cos://{bucket}/data/test.csv")
    cos.put_bytes(b"ckpt", f"cos://{bucket}/ckpt/job-a/ckpt-1.index")
    inputs = {"train": f"cos://{bucket}/data/train", "test": f"cos://{bucket}/data/test.csv"}
    pod = Pod(
        object_store,
        bucket,
        tmp_path / "ml",
        TI_SOURCE_DIR=f"cos://{bucket}/src/sourcedir.tar.gz",
        TI_INPUTS=json.dumps(inputs),
        TI_CHECKPOINT_PATH=f"cos://{bucket}/ckpt/job-a",
    )
    done = run_toolkit("fetch", pod.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "channel train" in done.stdout and "channel test" in done.stdout
    assert (pod.path(contract.CODE_DIR) / "lib" / "util.py").read_text() == "X = 1\n"
    assert sorted(p.name for p in (pod.root / "input/data/train").iterdir()) == [
        f"part-{i}.csv" for i in range(3)
    ]
    assert (pod.root / "input/data/test/test.csv").read_text() == "test\n"
    assert (pod.path(contract.CHECKPOINT_DIR) / "ckpt-1.index").read_bytes() == b"ckpt"
    launcher = pod.path(contract.LAUNCHER)
    assert launcher.read_text().startswith("#!/bin/sh") and os.access(launcher, os.X_OK)
    config = pod.path(contract.INPUT_CONFIG_DIR)
    assert json.loads((config / contract.HYPERPARAMETERS_FILE).read_text()) == {"epochs": "2", "lr": "0.1"}
    assert (
        json.loads((config / contract.INPUT_DATA_CONFIG_FILE).read_text())["train"]["uri"] == inputs["train"]
    )
    resource = json.loads((config / contract.RESOURCE_CONFIG_FILE).read_text())
    assert resource["current_host"] == "job-a-worker-0" and resource["hosts"] == ["job-a-worker-0"]
    assert object_store.secret_key not in done.stdout + done.stderr


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_fetch_names_an_empty_or_missing_channel(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path, where: str
) -> None:
    cos.put_bytes(b"x", f"cos://{bucket}/data/train/a")
    if where == "empty":
        cos.put_bytes(b"", f"cos://{bucket}/data/empty/")  # a console-made folder marker only
    uri = f"cos://{bucket}/data/{where}"
    pod = Pod(
        object_store,
        bucket,
        tmp_path,
        TI_INPUTS=json.dumps({"train": f"cos://{bucket}/data/train", "test": uri}),
    )
    done = run_toolkit("fetch", pod.env)
    assert done.returncode == contract.DOWNLOAD_FAILED_EXIT_CODE
    message = pod.termination()
    assert "channel 'test'" in message and uri in message
    assert pod.path(contract.FETCH_FAILURE_FILE).read_text() == message


def test_fetch_with_wrong_credentials(object_store: LoopbackObjectStore, bucket: str, tmp_path: Path) -> None:
    pod = Pod(
        object_store,
        bucket,
        tmp_path,
        TI_INPUTS=json.dumps({"train": f"cos://{bucket}/data/train"}),
        TENCENTCLOUD_SECRETKEY="the-wrong-secret-key",
    )
    done = run_toolkit("fetch", pod.env)
    assert done.returncode == contract.DOWNLOAD_FAILED_EXIT_CODE
    message = pod.termination()
    assert f"access denied to cos://{bucket}/data/train" in message and "TENCENTCLOUD_SECRETKEY" in message
    assert "the-wrong-secret-key" not in message + done.stdout + done.stderr


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("files", "extra", "says"),
    [
        ({"../../escaped.py": b"x"}, [], "'..'"),
        ({"/tmp/ti-abs-escape.py": b"x"}, [], "absolute"),
        ({}, [_symlink("code-link", "../../..")], "pointing outside"),
        ({"big.bin": b"0" * 5000}, [], "limit"),
    ],
)
def test_fetch_refuses_unsafe_source(
    object_store: LoopbackObjectStore,
    bucket: str,
    cos: CosStore,
    tmp_path: Path,
    files: dict[str, bytes],
    extra: list[tarfile.TarInfo],
    says: str,
) -> None:
    cos.put_bytes(tar_bytes({"train.py": b"ok", **files}, extra), f"cos://{bucket}/src/sourcedir.tar.gz")
    pod = Pod(
        object_store,
        bucket,
        tmp_path / "ml",
        TI_SOURCE_DIR=f"cos://{bucket}/src/sourcedir.tar.gz",
        TI_SOURCE_MAX_BYTES="4096",
    )
    done = run_toolkit("fetch", pod.env)
    assert done.returncode == contract.DOWNLOAD_FAILED_EXIT_CODE, done.stdout
    assert says in pod.termination()
    assert not any(pod.path(contract.CODE_DIR).iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml"]
    assert not Path("/tmp/ti-abs-escape.py").exists()


# ---- launch.sh -------------------------------------------------------------------------------------


LAUNCHER = Path(__file__).parents[2] / "src" / "ti" / "toolkit" / "launch.sh"
BUSYBOX_APPLETS = (
    "sh", "tee", "grep", "tail", "cut", "mkdir", "mkfifo", "rm", "mv", "cat", "kill", "sleep", "id",
)  # fmt: skip


def launch(
    root: Path,
    shell: str,
    entry: str,
    *args: str,
    scripts: dict[str, str],
    timeout: float = 60,
    as_user: list[str] | None = None,
    termination_log: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run launch.sh under `shell` (as `as_user`, setpriv's arguments) with the pod's root at `root`;
    its termination message goes to `root/termination-log`, as a kubelet's /dev/termination-log."""
    code = root / "code"
    code.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        (code / name).write_text(text)
    env = {**os.environ, contract.ML_ROOT_ENV: str(root)}
    if termination_log:
        env[contract.TERMINATION_LOG_ENV] = str(root / "termination-log")
    argv = [shell, str(LAUNCHER)]
    if shell == "busybox":
        # A busybox image: sh and every tool the launcher calls are busybox applets; python from the venv.
        busybox = shutil.which("busybox")
        assert busybox, "busybox is missing: `make setup` installs it (hack/system-deps.sh)"
        bin_dir = root / "busybox-bin"
        bin_dir.mkdir(exist_ok=True)
        for applet in BUSYBOX_APPLETS:
            (bin_dir / applet).unlink(missing_ok=True)
            (bin_dir / applet).symlink_to(busybox)
        env["PATH"] = f"{bin_dir}:{Path(sys.executable).parent}"
        argv = [str(bin_dir / "sh"), str(LAUNCHER)]
    if as_user is not None:
        argv = ["setpriv", *as_user, *argv]
    return subprocess.run([*argv, entry, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("shell", SHELLS)
def test_launcher_runs_the_script_and_tees_its_output(tmp_path: Path, shell: str) -> None:
    script = "import os, sys\nprint('args', sys.argv[1:])\nprint('cwd', os.getcwd())\nsys.stderr.write('to stderr\\n')\n"
    done = launch(tmp_path, shell, "train.py", "--epochs", "2", "--name", "a b", scripts={"train.py": script})
    assert done.returncode == 0, done.stderr
    log = (tmp_path / ".ti" / "training.log").read_text()
    assert "args ['--epochs', '2', '--name', 'a b']" in log and f"cwd {tmp_path / 'code'}" in log
    assert "to stderr" in log and "args" in done.stdout
    assert (tmp_path / ".ti" / "exitcode").read_text().strip() == "0"
    assert not (tmp_path / "output" / "failure").exists()
    assert not (tmp_path / "termination-log").exists()  # success says nothing: the upload step reports


@pytest.mark.parametrize("shell", SHELLS)
def test_launcher_writes_the_exception_tail_on_failure(tmp_path: Path, shell: str) -> None:
    script = (
        "print('x' * 10000)\n"
        "try:\n    raise KeyError('first')\nexcept KeyError:\n    pass\n"
        "def f():\n    raise ValueError('learning rate must be positive, got -1')\n"
        "f()\n"
    )
    done = launch(tmp_path, shell, "train.py", scripts={"train.py": script})
    assert done.returncode == 1
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("Traceback (most recent call last):")
    assert failure.rstrip().endswith("ValueError: learning rate must be positive, got -1")
    assert len(failure.encode()) <= contract.FAILURE_MESSAGE_LIMIT
    assert (tmp_path / ".ti" / "exitcode").read_text().strip() == "1"
    # The kubelet's copy says the same, and nothing of the launcher's own housekeeping.
    assert (tmp_path / "termination-log").read_text() == failure
    assert "rm:" not in done.stderr and "mv:" not in done.stderr, done.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_launcher_keeps_the_scripts_own_failure_file_and_exit_code(tmp_path: Path, shell: str) -> None:
    script = (
        "import os, sys\n"
        "open(os.path.join(os.environ['TI_ML_ROOT'], 'output', 'failure'), 'w').write('dataset is empty')\n"
        "raise SystemExit(3)\n"
    )
    done = launch(tmp_path, shell, "train.py", scripts={"train.py": script})
    assert done.returncode == 3
    assert (tmp_path / "output" / "failure").read_text() == "dataset is empty"
    assert (tmp_path / "termination-log").read_text() == "dataset is empty"
    assert (tmp_path / ".ti" / "exitcode").read_text().strip() == "3"


def test_launcher_runs_shell_entry_points_and_reports_a_missing_one(tmp_path: Path) -> None:
    done = launch(tmp_path, "sh", "run.sh", "a", scripts={"run.sh": 'echo "shell $1"\nexit 4\n'})
    assert done.returncode == 4 and "shell a" in (tmp_path / ".ti" / "training.log").read_text()
    assert "run.sh exited with code 4" in (tmp_path / "output" / "failure").read_text()
    done = launch(tmp_path / "other", "sh", "missing.py", scripts={})
    assert done.returncode == 2
    assert "entry point missing.py not found" in (tmp_path / "other" / "output" / "failure").read_text()


def test_launcher_forwards_sigterm(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('saving on SIGTERM', flush=True), sys.exit(143)))\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen(
        ["sh", str(LAUNCHER), "train.py"],
        env={**os.environ, contract.ML_ROOT_ENV: str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert "saving on SIGTERM" in (tmp_path / ".ti" / "training.log").read_text()
    assert (tmp_path / ".ti" / "exitcode").read_text().strip() == "143"


def test_launcher_writes_its_exit_code_however_it_ends(tmp_path: Path) -> None:
    # No entry point: the shell exits at once with a usage error; the EXIT trap still writes the code.
    done = subprocess.run(
        ["dash", str(LAUNCHER)],
        env={**os.environ, contract.ML_ROOT_ENV: str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "usage" in done.stderr
    assert (tmp_path / ".ti" / "exitcode").read_text().strip() == "2"


def test_launcher_without_a_writable_log_still_runs_the_script_and_reports(open_tmp: Path) -> None:
    """A user who cannot write /opt/ml/.ti: the script runs, its output reaches the container's log,
    and the termination message is left to the kubelet's fallback (the end of that log)."""
    assert os.geteuid() == 0, "switches users with setpriv: run the integration tier as root (make test does)"
    root = open_tmp / "ml"
    (root / ".ti").mkdir(mode=0o755, parents=True)
    script = "raise SystemExit('the learning rate is negative')\n"
    done = launch(
        root,
        "dash",
        "train.py",
        scripts={"train.py": script},
        as_user=["--reuid=1000", "--regid=1000", "--clear-groups"],
    )
    assert done.returncode == 1, done.stderr
    assert "the learning rate is negative" in done.stderr
    assert "cannot write" in done.stderr and "training.log" in done.stderr
    assert not (root / "termination-log").exists()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder that other users can enter (pytest's own are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="ti-users-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_script_of_another_user_writes_what_fetch_made_and_upload_reads_it(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, open_tmp: Path
) -> None:
    """A custom image whose user is neither root nor the toolkit's: with the pod's fsGroup, fetch's tree
    is writable for it; without, it still ends the upload step's wait with its exit code."""
    assert os.geteuid() == 0, "switches users with setpriv: run the integration tier as root (make test does)"
    script = (
        'echo "training as $(id -u)"\n'
        'mkdir -p "$TI_ML_ROOT/model/1" && echo graph > "$TI_ML_ROOT/model/1/saved_model.pb" || exit 5\n'
        'echo "{}" > "$TI_ML_ROOT/output/data/history.json" || exit 6\n'
    )
    cos.put_bytes(tar_bytes({"train.sh": script.encode()}), f"cos://{bucket}/src/sourcedir.tar.gz")
    group = contract.POD_FS_GROUP
    for with_group in (True, False):
        root = open_tmp / f"group-{with_group}"
        root.mkdir()
        # The kubelet's emptyDir with the pod's fsGroup: its group, setgid, writable by all.
        os.chown(root, 0, group)
        root.chmod(0o2777)
        pod = Pod(object_store, bucket, root, TI_SOURCE_DIR=f"cos://{bucket}/src/sourcedir.tar.gz")
        fetched = run_toolkit("fetch", pod.env)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        for folder in (contract.MODEL_DIR, contract.OUTPUT_DATA_DIR, contract.CODE_DIR):
            info = pod.path(folder).stat()
            assert info.st_gid == group and info.st_mode & 0o7777 == 0o2775, folder
        assert pod.path(contract.TI_DIR).stat().st_mode & 0o7777 == 0o2777

        user = [
            "--reuid=1000",
            "--regid=1000",
            *([f"--groups={group}"] if with_group else ["--clear-groups"]),
        ]
        done = launch(root, "dash", "train.sh", scripts={}, as_user=user)
        exit_file = pod.path(contract.EXIT_CODE_FILE)
        assert exit_file.stat().st_uid == 1000
        if with_group:
            assert done.returncode == 0, done.stdout + done.stderr
            assert "training as 1000" in pod.path(contract.LOG_FILE).read_text()
            model = pod.path(contract.MODEL_DIR) / "1" / "saved_model.pb"
            assert model.stat().st_gid == group and model.stat().st_mode & 0o020, "not group-writable"
        else:
            assert done.returncode == 5, done.stdout + done.stderr
            # Not even output/ is writable for it: the kubelet's copy of the reason still comes.
            assert not pod.path(contract.FAILURE_FILE).exists()
            assert "Permission denied" in (root / "termination-log").read_text()
        assert exit_file.read_text().strip() == str(done.returncode)

        uploaded = run_toolkit("upload", pod.env)
        assert uploaded.returncode == done.returncode, uploaded.stdout + uploaded.stderr
    keys = object_store.keys(bucket, "out/job-a/")
    assert "out/job-a/output/model.tar.gz" in keys and "out/job-a/logs/job-a-worker-0.log" in keys
    assert members(cos, "cos://" + bucket + "/out/job-a/output/model.tar.gz") == ["1", "1/saved_model.pb"]


# ---- upload ----------------------------------------------------------------------------------------


def finished_main(pod: Pod, code: int, log: str, *, model: bool = True, failure: str | None = None) -> None:
    """What the launcher leaves behind when the training script has ended."""
    (pod.path(contract.MODEL_DIR) / "1").mkdir(parents=True, exist_ok=True)
    if model:
        (pod.path(contract.MODEL_DIR) / "1" / "saved_model.pb").write_bytes(b"graph")
    pod.path(contract.OUTPUT_DATA_DIR).mkdir(parents=True, exist_ok=True)
    (pod.path(contract.OUTPUT_DATA_DIR) / "history.json").write_text("{}")
    if failure is not None:
        pod.path(contract.FAILURE_FILE).write_text(failure)
    pod.path(contract.LOG_FILE).parent.mkdir(parents=True, exist_ok=True)
    pod.path(contract.LOG_FILE).write_text(log)
    pod.path(contract.EXIT_CODE_FILE).write_text(f"{code}\n")


def members(cos: CosStore, uri: str) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(cos.get_bytes(uri))) as tar:
        return sorted(tar.getnames())


METRICS = json.dumps(
    [{"name": "loss", "regex": r"loss=([0-9.]+)"}, {"name": "acc", "regex": r"acc=([0-9.]+)"}]
)


def test_upload_after_success(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path
) -> None:
    pod = Pod(object_store, bucket, tmp_path, TI_METRIC_DEFINITIONS=METRICS)
    finished_main(pod, 0, "epoch 1 loss=0.9 acc=0.5\nepoch 2 loss=0.4 acc=0.8\n")
    done = run_toolkit("upload", pod.env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = f"cos://{bucket}/out/job-a"
    assert members(cos, f"{out}/output/model.tar.gz") == ["1", "1/saved_model.pb"]
    assert members(cos, f"{out}/output/output.tar.gz") == ["history.json"]
    assert cos.get_bytes(f"{out}/logs/job-a-worker-0.log").decode().endswith("loss=0.4 acc=0.8\n")
    assert json.loads(pod.termination()) == {"metrics": {"loss": 0.4, "acc": 0.8}}
    assert json.loads(pod.path(contract.METRICS_FILE).read_text()) == {"loss": 0.4, "acc": 0.8}


@pytest.mark.parametrize(("role", "index"), [("worker", "1"), ("ps", "0")])
def test_only_the_chief_uploads_the_model(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path, role: str, index: str
) -> None:
    host = f"job-a-{role}-{index}"
    pod = Pod(
        object_store,
        bucket,
        tmp_path,
        TI_INSTANCE_ROLE=role,
        TI_INSTANCE_INDEX=index,
        TM_CURRENT_HOST=host,
        TI_CHECKPOINT_PATH=f"cos://{bucket}/ckpt",
    )
    finished_main(pod, 0, "done\n")
    pod.path(contract.CHECKPOINT_DIR).mkdir()
    (pod.path(contract.CHECKPOINT_DIR) / "ckpt-9.index").write_bytes(b"not the chief's")
    assert run_toolkit("upload", pod.env).returncode == 0
    assert object_store.keys(bucket, "") == [f"out/job-a/logs/{host}.log"]


def test_upload_after_a_failed_script(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path
) -> None:
    pod = Pod(object_store, bucket, tmp_path)
    finished_main(pod, 1, "Traceback ...\nValueError: bad\n", failure="ValueError: bad")
    done = run_toolkit("upload", pod.env)
    assert done.returncode == 1
    assert pod.termination() == "ValueError: bad"
    keys = object_store.keys(bucket, "out/")
    assert "out/job-a/output/model.tar.gz" not in keys
    assert "out/job-a/logs/job-a-worker-0.log" in keys and "out/job-a/output/output.tar.gz" in keys


def test_failed_upload_is_upload_failed_and_leaves_no_model(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    pod = Pod(object_store, bucket, tmp_path)
    finished_main(pod, 0, "ok\n")
    object_store.faults.inject("status", count=10_000, method="PUT", path_contains="/output/", status=503)
    done = run_toolkit("upload", pod.env, timeout=120)
    object_store.faults.clear()
    assert done.returncode == contract.UPLOAD_FAILED_EXIT_CODE
    message = pod.termination()
    assert message.startswith(contract.UPLOAD_FAILED_REASON) and "output data" in message
    assert pod.path(contract.UPLOAD_FAILURE_FILE).read_text() == message
    assert object_store.keys(bucket, "out/job-a/output/") == []
    assert object_store.pending_uploads(bucket) == []


def test_upload_with_unreachable_store_never_reports_success(bucket: str, tmp_path: Path) -> None:
    pod_env = {
        contract.ML_ROOT_ENV: str(tmp_path),
        contract.TERMINATION_LOG_ENV: str(tmp_path / "termination-log"),
        contract.TI_JOB_NAME: "job-a",
        contract.TI_OUTPUT_PATH: f"cos://{bucket}/out",
        "TENCENTCLOUD_SECRETID": "id",
        "TENCENTCLOUD_SECRETKEY": "key",
        "TENCENTCLOUD_REGION": "ap-guangzhou",
        "TI_COS_ENDPOINT": "http://127.0.0.1:9",  # nothing listens on the discard port
    }
    (tmp_path / ".ti").mkdir()
    (tmp_path / ".ti" / "exitcode").write_text("0\n")
    (tmp_path / ".ti" / "training.log").write_text("ok\n")
    done = run_toolkit("upload", pod_env, timeout=180)
    assert done.returncode == contract.UPLOAD_FAILED_EXIT_CODE
    assert (tmp_path / "termination-log").read_text().startswith(contract.UPLOAD_FAILED_REASON)


def test_checkpoints_sync_while_training_and_at_the_end(
    object_store: LoopbackObjectStore, bucket: str, cos: CosStore, tmp_path: Path
) -> None:
    ckpt = f"cos://{bucket}/ckpt/job-a"
    cos.put_bytes(b"restored", f"{ckpt}/ckpt-0.index")
    pod = Pod(object_store, bucket, tmp_path, TI_CHECKPOINT_PATH=ckpt, TI_CHECKPOINT_SYNC_SECONDS="1")
    assert run_toolkit("fetch", pod.env).returncode == 0
    full = {**os.environ, **pod.env}
    upload = subprocess.Popen(
        [sys.executable, "-m", "ti.toolkit", "upload", "--poll-seconds", "0.1"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        checkpoints = pod.path(contract.CHECKPOINT_DIR)
        (checkpoints / "ckpt-1.index").write_bytes(b"one")
        deadline = time.monotonic() + 30
        while "ckpt/job-a/ckpt-1.index" not in object_store.keys(bucket, "ckpt/"):
            assert time.monotonic() < deadline, "the periodic sync did not upload ckpt-1"
            time.sleep(0.2)
        assert upload.poll() is None  # still waiting for the script
        (checkpoints / "ckpt-2.index").write_bytes(b"two")
        finished_main(pod, 0, "ok\n")
        assert upload.wait(timeout=60) == 0
    finally:
        if upload.poll() is None:
            upload.kill()
    assert cos.get_bytes(f"{ckpt}/ckpt-2.index") == b"two"
    assert upload.stdout is not None
    output = upload.stdout.read()
    # The restored checkpoint was not uploaded again.
    assert "synced 1 files" in output


def test_upload_on_sigterm_stores_the_log(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    pod = Pod(object_store, bucket, tmp_path)
    pod.path(contract.LOG_FILE).parent.mkdir(parents=True)
    pod.path(contract.LOG_FILE).write_text("half way\n")
    upload = subprocess.Popen(
        [sys.executable, "-m", "ti.toolkit", "upload", "--poll-seconds", "0.1"],
        env={**os.environ, **pod.env},
        stdout=subprocess.DEVNULL,
    )
    time.sleep(2)
    upload.send_signal(signal.SIGTERM)
    # The launcher, terminated too, writes its code soon after; the upload step then finishes.
    pod.path(contract.EXIT_CODE_FILE).write_text("143\n")
    assert upload.wait(timeout=60) == 143
    keys = object_store.keys(bucket, "out/")
    assert "out/job-a/logs/job-a-worker-0.log" in keys and "out/job-a/output/model.tar.gz" not in keys


def test_upload_ends_when_the_launcher_never_starts(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    # An image without /bin/sh, say: the main container ends at once, no launcher ever runs.
    pod = Pod(object_store, bucket, tmp_path, **{contract.TI_LAUNCHER_START_SECONDS: "2"})
    started = time.monotonic()
    done = run_toolkit("upload", pod.env)
    assert done.returncode == contract.UPLOAD_FAILED_EXIT_CODE, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    message = pod.termination()
    assert message.startswith(contract.UPLOAD_FAILED_REASON) and "did not start within 2s" in message
    assert object_store.keys(bucket, "out/job-a/output/") == []


def test_upload_ends_when_the_launchers_container_is_killed(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    """The whole container is killed (a cgroup OOM kill): no exit code is written, the heartbeat stops,
    and the upload step stores the log and ends instead of waiting forever."""
    pod = Pod(object_store, bucket, tmp_path, **{contract.TI_LAUNCHER_GRACE_SECONDS: "6"})
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text(
        "import time\nprint('training', flush=True)\ntime.sleep(300)\n"
    )
    launcher = subprocess.Popen(
        ["dash", str(LAUNCHER), "train.py"],
        env={**os.environ, contract.ML_ROOT_ENV: str(tmp_path)},
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    upload = subprocess.Popen(
        [sys.executable, "-m", "ti.toolkit", "upload", "--poll-seconds", "0.1"],
        env={**os.environ, **pod.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = pod.path(contract.LOG_FILE)
        deadline = time.monotonic() + 30
        while not (log.is_file() and "training" in log.read_text()):
            assert time.monotonic() < deadline, "the script did not start"
            time.sleep(0.1)
        time.sleep(8)  # longer than the grace: the heartbeat keeps the upload step waiting
        assert upload.poll() is None, "the upload step gave up on a launcher that runs"
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)
        assert upload.wait(timeout=60) == contract.UPLOAD_FAILED_EXIT_CODE
    finally:
        for proc in (launcher, upload):
            if proc.poll() is None:
                proc.kill()
    assert not pod.path(contract.EXIT_CODE_FILE).exists()
    message = pod.termination()
    assert message.startswith(contract.UPLOAD_FAILED_REASON) and "without writing an exit code" in message
    keys = object_store.keys(bucket, "out/job-a/")
    assert "out/job-a/logs/job-a-worker-0.log" in keys and "out/job-a/output/model.tar.gz" not in keys
