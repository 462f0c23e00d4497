"""Pure pieces of the toolkit and local mode: path rebasing, metrics, messages, pod → process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ti import contract
from ti.local.process import container_command, container_env, loopback_addresses
from ti.toolkit.layout import Layout, rebase
from ti.toolkit.report import clip
from ti.toolkit.upload import final_metrics

pytestmark = pytest.mark.unit


def test_rebase() -> None:
    assert rebase("/opt/ml/model", "/w/p") == "/w/p/model"
    assert rebase("/opt/ml", "/w/p") == "/w/p"
    assert rebase("/opt/mlx/y", "/w/p") == "/opt/mlx/y"
    assert rebase("/opt/ml/code:/usr/lib", "/w") == "/w/code:/usr/lib"
    assert rebase("/opt/ml/model", contract.ML_ROOT) == "/opt/ml/model"
    layout = Layout.from_env({contract.ML_ROOT_ENV: "/w"})
    assert layout.model == Path("/w/model") and layout.channel("train") == Path("/w/input/data/train")
    assert Layout.from_env({}).code == Path(contract.CODE_DIR)


def test_final_metrics_takes_the_last_value(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("epoch 1: loss=0.9 accuracy=0.5\nnoise loss=abc\nepoch 2: loss=0.25 accuracy=0.75\n")
    definitions = [
        {"name": "loss", "regex": r"loss=([0-9.]+)"},
        {"name": "accuracy", "regex": r"accuracy=([0-9.]+)"},
        {"Name": "epochs", "Regex": r"epoch \d+"},  # no group: the whole match, not a number
        {"name": "broken", "regex": "("},
        {"name": "absent", "regex": r"never=(\d)"},
    ]
    assert final_metrics(log, definitions) == {"loss": 0.25, "accuracy": 0.75}
    assert final_metrics(tmp_path / "missing", definitions) == {}


def test_clip_keeps_the_end_on_a_character_boundary() -> None:
    assert clip("short") == "short"
    text = "é" * 3000  # 6000 bytes
    clipped = clip(text, 4096)
    assert len(clipped.encode()) <= 4096 and clipped == "é" * len(clipped)


def pod(name: str, index: int, tf_config: dict | None) -> dict:
    env = [{"name": "TM_MODEL_DIR", "value": "/opt/ml/model"}, {"name": "PATHS", "value": "/opt/ml/code:/x"}]
    if tf_config is not None:
        env.append({"name": "TF_CONFIG", "value": json.dumps(tf_config)})
    secret_ref = {"name": "TENCENTCLOUD_SECRETKEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    return {
        "metadata": {
            "name": name,
            "labels": {contract.LABEL_ROLE: "worker", contract.LABEL_INDEX: str(index)},
        },
        "spec": {
            "initContainers": [
                {"name": "fetch", "command": ["ti-toolkit", "fetch"], "env": [*env, secret_ref]}
            ],
            "containers": [
                {
                    "name": "tensorflow",
                    "command": contract.main_command("train.py", {"epochs": "2"}),
                    "env": env,
                },
                {"name": "upload", "command": ["ti-toolkit", "upload"], "env": env},
            ],
        },
    }


def test_local_rewrites_paths_ports_commands_and_keeps_secrets_from_the_script(tmp_path: Path) -> None:
    hosts = ["j-worker-0.j.ns.svc:2222", "j-worker-1.j.ns.svc:2222"]
    pods = [
        pod(f"j-worker-{i}", i, {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
        for i in (0, 1)
    ]
    addresses = loopback_addresses(pods)
    assert set(addresses) == set(hosts) and len(set(addresses.values())) == 2
    assert all(a.startswith("127.0.0.1:") for a in addresses.values())
    storage = {"TENCENTCLOUD_SECRETID": "id", "TENCENTCLOUD_SECRETKEY": "key"}
    base = {"PATH": "/usr/bin", "TENCENTCLOUD_SECRETKEY": "leaked?"}
    root = tmp_path / "j-worker-1"
    spec = pods[1]["spec"]
    main_env = container_env(pods[1], spec["containers"][0], root, addresses, storage, base)
    assert main_env["TM_MODEL_DIR"] == f"{root}/model" and main_env["PATHS"] == f"{root}/code:/x"
    assert main_env[contract.ML_ROOT_ENV] == str(root) and main_env["HOSTNAME"] == "j-worker-1"
    assert "TENCENTCLOUD_SECRETKEY" not in main_env and "TENCENTCLOUD_SECRETID" not in main_env
    cluster = json.loads(main_env["TF_CONFIG"])
    assert cluster["cluster"]["worker"] == [addresses[h] for h in hosts] and cluster["task"]["index"] == 1
    fetch_env = container_env(pods[1], spec["initContainers"][0], root, addresses, storage, base)
    assert fetch_env["TENCENTCLOUD_SECRETKEY"] == "key"
    assert container_command(spec["initContainers"][0], root, "/py") == ["/py", "-m", "ti.toolkit", "fetch"]
    assert container_command(spec["containers"][0], root, "/py") == [
        "/bin/sh",
        f"{root}/.ti/launch.sh",
        "train.py",
        "--epochs",
        "2",
    ]
