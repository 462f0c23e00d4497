from __future__ import annotations

import json
from typing import Any

import pytest

from ti import contract
from ti.api import TFTrainingJob
from ti.catalog import CatalogError, default_catalog
from ti.operator.render import TF_PORT, render, tf_config
from ti.operator.settings import OperatorConfig

from .jobs import at, job
from .pod_security import baseline, restricted

pytestmark = pytest.mark.unit

CATALOG = default_catalog()
CONFIG = OperatorConfig(
    storage_secret="cos-default", cos_region="ap-guangzhou", cos_endpoint="http://127.0.0.1:9000"
)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), f"duplicate env in {container['name']}"
    return {e["name"]: e["value"] for e in container["env"]}


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def test_single_cpu_instance() -> None:
    r = render(job(), CATALOG, CONFIG)
    assert r.service is None
    (pod,) = r.pods
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "mnist-worker-0"
    assert meta["namespace"] == "team-a"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "ti-operator",
        contract.LABEL_JOB: "mnist",
        contract.LABEL_ROLE: "worker",
        contract.LABEL_INDEX: "0",
        contract.LABEL_ATTEMPT: "0",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "training.ti.io/v1alpha1",
            "kind": "TFTrainingJob",
            "name": "mnist",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["serviceAccountName"] == "trainer"
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 86400
    assert "hostname" not in spec and "subdomain" not in spec
    assert [c["name"] for c in spec["initContainers"]] == [contract.FETCH_CONTAINER]
    assert [c["name"] for c in spec["containers"]] == [contract.MAIN_CONTAINER, contract.UPLOAD_CONTAINER]
    assert spec["volumes"][0] == {"name": contract.ML_VOLUME, "emptyDir": {"sizeLimit": "30Gi"}}
    main = containers(pod)[contract.MAIN_CONTAINER]
    assert main["image"] == "tensorflow/tensorflow:2.16.1"
    assert main["command"] == contract.main_command("train.py", {"epochs": "3", "batch_size": "64"})
    assert main["command"][-4:] == ["--batch_size", "64", "--epochs", "3"]
    assert main["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert main["terminationMessagePath"] == contract.TERMINATION_LOG == "/dev/termination-log"
    assert main["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "ports" not in main
    assert "nodeSelector" not in spec and "tolerations" not in spec
    for c in containers(pod).values():
        assert {"name": contract.ML_VOLUME, "mountPath": "/opt/ml"} in c["volumeMounts"]
    assert r.pods == render(job(), CATALOG, CONFIG).pods  # deterministic


def test_main_environment_is_complete() -> None:
    (pod,) = render(job(), CATALOG, CONFIG).pods
    env = env_of(containers(pod)[contract.MAIN_CONTAINER])
    assert env == {
        "TM_MODEL_DIR": "/opt/ml/model",
        "TM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
        "TM_INPUT_CONFIG_DIR": "/opt/ml/input/config",
        "TM_NUM_GPUS": "0",
        "TM_NUM_CPUS": "4",
        "TM_CHANNELS": '["test", "train"]',
        "TM_CHANNEL_TEST": "/opt/ml/input/data/test",
        "TM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "TM_HPS": '{"batch_size": "64", "epochs": "3"}',
        "TM_HOSTS": '["mnist-worker-0"]',
        "TM_CURRENT_HOST": "mnist-worker-0",
        "PYTHONUNBUFFERED": "1",
    }


def test_user_env_checkpoints_and_no_tf_config_for_one_instance() -> None:
    j = job(env=[{"name": "MY_FLAG", "value": "on"}], checkpointPath="cos://ckpt-1250000000/mnist")
    (pod,) = render(j, CATALOG, CONFIG).pods
    env = env_of(containers(pod)[contract.MAIN_CONTAINER])
    assert env["MY_FLAG"] == "on"
    assert env["TM_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"
    assert "TF_CONFIG" not in env
    assert [e["name"] for e in containers(pod)[contract.MAIN_CONTAINER]["env"]][-1] == "MY_FLAG"


def test_no_secret_in_main_container_and_secret_in_toolkit() -> None:
    (pod,) = render(job(), CATALOG, CONFIG).pods
    c = containers(pod)
    main = c[contract.MAIN_CONTAINER]
    assert "envFrom" not in main
    assert not any("SECRET" in e["name"] or "valueFrom" in e for e in main["env"])
    for name in (contract.FETCH_CONTAINER, contract.UPLOAD_CONTAINER):
        assert c[name]["envFrom"] == [{"secretRef": {"name": "cos-default"}}]
    j = job(storageSecretRef={"name": "team-cos"})
    (pod,) = render(j, CATALOG, CONFIG).pods
    assert containers(pod)[contract.FETCH_CONTAINER]["envFrom"] == [{"secretRef": {"name": "team-cos"}}]
    (pod,) = render(job(), CATALOG, OperatorConfig()).pods
    assert "envFrom" not in containers(pod)[contract.FETCH_CONTAINER]


def test_toolkit_containers() -> None:
    (pod,) = render(job(checkpointPath="cos://ckpt-1250000000/mnist"), CATALOG, CONFIG).pods
    c = containers(pod)
    fetch, upload = c[contract.FETCH_CONTAINER], c[contract.UPLOAD_CONTAINER]
    assert fetch["command"] == contract.FETCH_COMMAND and upload["command"] == contract.UPLOAD_COMMAND
    assert fetch["image"] == upload["image"] == CATALOG.toolkit_image
    assert "terminationMessagePath" not in upload  # its own default path
    env = env_of(fetch)
    assert env_of(upload) == env
    assert env[contract.TI_JOB_NAME] == "mnist"
    assert env[contract.TI_SOURCE_DIR] == "cos://code-1250000000/mnist/sourcedir.tar.gz"
    assert env[contract.TI_ENTRY_POINT] == "train.py"
    assert json.loads(env[contract.TI_INPUTS]) == {
        "train": "cos://data-1250000000/mnist/train",
        "test": "cos://data-1250000000/mnist/test",
    }
    assert env[contract.TI_OUTPUT_PATH] == "cos://out-1250000000/models"
    assert env[contract.TI_CHECKPOINT_PATH] == "cos://ckpt-1250000000/mnist"
    assert env[contract.TI_INSTANCE_INDEX] == "0"
    assert env[contract.TI_INSTANCE_ROLE] == "worker"
    assert json.loads(env[contract.TI_METRIC_DEFINITIONS]) == []
    assert env[contract.TI_CHECKPOINT_SYNC_SECONDS] == "60"
    # The upload step gives a launcher that never beats as long as the operator gives a stuck pod.
    assert env[contract.TI_LAUNCHER_START_SECONDS] == "900"  # the default schedulingTimeoutSeconds
    assert env[contract.TENCENTCLOUD_REGION] == "ap-guangzhou"
    assert env[contract.COS_ENDPOINT] == "http://127.0.0.1:9000"
    assert env["TM_HOSTS"] == '["mnist-worker-0"]'  # the fetch step writes resourceconfig.json from these
    custom = OperatorConfig(toolkit_image="me/toolkit:dev", image_pull_policy="Never")
    (pod,) = render(job(), CATALOG, custom).pods
    assert {c["image"] for n, c in containers(pod).items() if n != contract.MAIN_CONTAINER} == {
        "me/toolkit:dev"
    }
    assert {c["imagePullPolicy"] for c in containers(pod).values()} == {"Never"}


def test_metric_definitions_reach_the_toolkit() -> None:
    j = job(metricDefinitions=[{"name": "loss", "regex": "loss=([0-9.]+)"}])
    (pod,) = render(j, CATALOG, CONFIG).pods
    env = env_of(containers(pod)[contract.UPLOAD_CONTAINER])
    assert json.loads(env[contract.TI_METRIC_DEFINITIONS]) == [{"name": "loss", "regex": "loss=([0-9.]+)"}]


def test_gpu_instance_type() -> None:
    (pod,) = render(job(instanceType="ML.GN8.3XLARGE112"), CATALOG, CONFIG).pods
    main = containers(pod)[contract.MAIN_CONTAINER]
    assert main["image"] == "tensorflow/tensorflow:2.16.1-gpu"
    assert main["resources"]["limits"] == {"cpu": "14", "memory": "112Gi", "nvidia.com/gpu": "2"}
    assert main["resources"]["requests"]["nvidia.com/gpu"] == "2"
    for name in (contract.FETCH_CONTAINER, contract.UPLOAD_CONTAINER):
        assert "nvidia.com/gpu" not in json.dumps(containers(pod)[name]["resources"])
    env = env_of(main)
    assert env["TM_NUM_GPUS"] == "2" and env["TM_NUM_CPUS"] == "14"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in main["volumeMounts"]


def test_gpu_1_14_uses_the_seed_image() -> None:
    (pod,) = render(job(instanceType="ML.GN8.LARGE56", frameworkVersion="1.14.0"), CATALOG, CONFIG).pods
    assert containers(pod)[contract.MAIN_CONTAINER]["image"] == "tensorflow/tensorflow:1.14.0-gpu-py3"


def test_custom_image_node_selector_scheduling_and_volume(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "instanceTypes:\n  PINNED:\n    cpu: 0.5\n    memory: 512Mi\n    nodeSelector: {pool: train}\n"
    )
    from ti.catalog import load_catalog

    j = job(
        image="registry.example.com/me/tf:custom",
        instanceType="PINNED",
        volumeSizeGB=100,
        runPolicy={"schedulerName": "volcano", "priorityClassName": "high"},
    )
    (pod,) = render(j, load_catalog(f), CONFIG).pods
    spec = pod["spec"]
    main = containers(pod)[contract.MAIN_CONTAINER]
    assert main["image"] == "registry.example.com/me/tf:custom"
    assert main["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert env_of(main)["TM_NUM_CPUS"] == "1"
    assert spec["nodeSelector"] == {"pool": "train"}
    assert spec["schedulerName"] == "volcano"
    assert spec["priorityClassName"] == "high"
    assert spec["volumes"][0]["emptyDir"]["sizeLimit"] == "100Gi"


def _host(i: int, role: str = "worker") -> str:
    return f"mnist-{role}-{i}.mnist.team-a.svc:{TF_PORT}"


@pytest.mark.parametrize("count", [2, 8])
def test_multi_worker_mirrored(count: int) -> None:
    r = render(job(instanceCount=count), CATALOG, CONFIG)
    assert [p["metadata"]["name"] for p in r.pods] == [f"mnist-worker-{i}" for i in range(count)]
    hosts = [f"mnist-worker-{i}" for i in range(count)]
    for i, pod in enumerate(r.pods):
        spec = pod["spec"]
        assert spec["hostname"] == f"mnist-worker-{i}"
        assert spec["subdomain"] == "mnist"
        assert pod["metadata"]["labels"][contract.LABEL_INDEX] == str(i)
        main = containers(pod)[contract.MAIN_CONTAINER]
        assert main["ports"] == [{"name": "tf", "containerPort": TF_PORT, "protocol": "TCP"}]
        env = env_of(main)
        assert json.loads(env["TM_HOSTS"]) == hosts
        assert env["TM_CURRENT_HOST"] == hosts[i]
        config = json.loads(env["TF_CONFIG"])
        assert set(config) == {"cluster", "task"}
        assert config["cluster"] == {"worker": [_host(k) for k in range(count)]}
        assert config["task"] == {"type": "worker", "index": i}
    svc = r.service
    assert svc is not None
    assert svc["metadata"]["name"] == "mnist"
    assert svc["metadata"]["namespace"] == "team-a"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {contract.LABEL_JOB: "mnist"}
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["ports"][0]["port"] == TF_PORT


def test_parameter_server_two_workers_two_ps() -> None:
    j = job(instanceCount=2, distribution={"type": "parameterServer", "parameterServerCount": 2})
    r = render(j, CATALOG, CONFIG)
    names = [p["metadata"]["name"] for p in r.pods]
    assert names == ["mnist-worker-0", "mnist-worker-1", "mnist-ps-0", "mnist-ps-1"]
    cluster = {"chief": [_host(0)], "worker": [_host(1)], "ps": [_host(0, "ps"), _host(1, "ps")]}
    tasks = [
        {"type": "chief", "index": 0},
        {"type": "worker", "index": 0},
        {"type": "ps", "index": 0},
        {"type": "ps", "index": 1},
    ]
    for pod, task in zip(r.pods, tasks, strict=True):
        env = env_of(containers(pod)[contract.MAIN_CONTAINER])
        config = json.loads(env["TF_CONFIG"])
        assert config["cluster"] == cluster
        assert config["task"] == task
        assert json.loads(env["TM_HOSTS"]) == ["mnist-worker-0", "mnist-worker-1"]
        assert env["TM_CURRENT_HOST"] == pod["metadata"]["name"]
    ps0 = r.pods[2]
    assert ps0["metadata"]["labels"][contract.LABEL_ROLE] == "ps"
    assert env_of(containers(ps0)[contract.FETCH_CONTAINER])[contract.TI_INSTANCE_ROLE] == "ps"
    assert r.service is not None


def test_one_worker_with_a_parameter_server_is_distributed() -> None:
    j = job(distribution={"type": "parameterServer"})
    r = render(j, CATALOG, CONFIG)
    assert len(r.pods) == 2 and r.service is not None
    assert tf_config(j, "worker", 0) == {
        "cluster": {"chief": [_host(0)], "ps": [_host(0, "ps")]},
        "task": {"type": "chief", "index": 0},
    }


def test_eight_gpu_workers_parameter_server() -> None:
    j = job(instanceCount=8, instanceType="ML.GN8.3XLARGE112", distribution={"type": "parameterServer"})
    r = render(j, CATALOG, CONFIG)
    assert len(r.pods) == 9
    config = tf_config(j, "worker", 7)
    assert config is not None
    assert config["task"] == {"type": "worker", "index": 6}
    assert len(config["cluster"]["worker"]) == 7
    ps = r.pods[-1]
    assert containers(ps)[contract.MAIN_CONTAINER]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_attempt_label_and_deadline() -> None:
    j = job(status={"startTime": "2024-05-01T12:00:00Z", "restartCount": 2}, maxRunSeconds=3600)
    (pod,) = render(j, CATALOG, CONFIG, 2, now=at(600)).pods
    assert pod["metadata"]["labels"][contract.LABEL_ATTEMPT] == "2"
    assert pod["spec"]["activeDeadlineSeconds"] == 3000
    (late,) = render(j, CATALOG, CONFIG, 2, now=at(7200)).pods
    assert late["spec"]["activeDeadlineSeconds"] == 1


def test_grace_period_from_config() -> None:
    (pod,) = render(job(), CATALOG, OperatorConfig(stop_grace_seconds=90)).pods
    assert pod["spec"]["terminationGracePeriodSeconds"] == 90


def test_local_types_are_refused_in_cluster_only() -> None:
    j = job(instanceType="local")
    with pytest.raises(CatalogError, match="local mode"):
        render(j, CATALOG, CONFIG)
    (pod,) = render(j, CATALOG, CONFIG, cluster=False).pods
    assert env_of(containers(pod)[contract.MAIN_CONTAINER])["TM_NUM_GPUS"] == "0"


def test_unknown_framework_is_invalid_spec() -> None:
    with pytest.raises(CatalogError) as err:
        render(job(frameworkVersion="0.9"), CATALOG, CONFIG)
    assert err.value.reason == "InvalidSpec"


def test_no_namespace_no_uid_local_mode() -> None:
    b = job().to_body()
    b["metadata"] = {"name": "mnist"}
    (pod,) = render(TFTrainingJob.from_body(b), CATALOG, CONFIG, cluster=False).pods
    assert "ownerReferences" not in pod["metadata"]
    assert "namespace" not in pod["metadata"]


def test_operator_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "TI_TOOLKIT_IMAGE": "t:1",
            "TI_STORAGE_SECRET": "s",
            "TI_COS_ENDPOINT": "http://x",
            "TI_STOP_GRACE_SECONDS": "5",
        }
    )
    assert (config.toolkit_image, config.storage_secret, config.cos_endpoint, config.stop_grace_seconds) == (
        "t:1",
        "s",
        "http://x",
        5,
    )
    assert OperatorConfig.from_env({}) == OperatorConfig()


# ---- what a real kubelet and the Pod Security admission see -----------------------------------------


def _under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def test_no_termination_message_path_lies_in_a_volume() -> None:
    """The kubelet bind-mounts its own file at terminationMessagePath: inside the shared /opt/ml it
    would hide the script's failure file and make the launcher's rm and mv fail (Device or resource busy)."""
    j = job(instanceCount=2, instanceType="ML.GN8.3XLARGE112", checkpointPath="cos://ckpt-1250000000/m")
    for pod in render(j, CATALOG, CONFIG).pods:
        for c in containers(pod).values():
            path = c.get("terminationMessagePath", contract.TERMINATION_LOG)
            mounts = [m["mountPath"] for m in c["volumeMounts"]]
            assert not any(_under(path, m) for m in mounts), f"{c['name']}: {path} is inside {mounts}"
            assert not _under(path, contract.ML_ROOT)
            assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_pod_shares_its_volume_through_a_group() -> None:
    (pod,) = render(job(), CATALOG, CONFIG).pods
    assert pod["spec"]["securityContext"] == {
        "fsGroup": contract.POD_FS_GROUP,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for name in (contract.FETCH_CONTAINER, contract.UPLOAD_CONTAINER):
        ctx = containers(pod)[name]["securityContext"]
        assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["runAsNonRoot"]) == (contract.TOOLKIT_UID,) * 2 + (
            True,
        )


RESTRICTED_SHAPES = {
    "single": {},
    "checkpoints": {"checkpointPath": "cos://ckpt-1250000000/mnist"},
    "two-workers": {"instanceCount": 2},
    "parameter-server": {"instanceCount": 2, "distribution": {"type": "parameterServer"}},
    "gpus": {"instanceType": "ML.GN8.3XLARGE112", "instanceCount": 2},
    "tf-1.14": {"frameworkVersion": "1.14.0"},
    "no-secret": {},
}


@pytest.mark.parametrize("shape", sorted(RESTRICTED_SHAPES))
def test_pods_with_a_catalog_image_meet_the_restricted_standard(shape: str) -> None:
    config = OperatorConfig() if shape == "no-secret" else CONFIG
    for pod in render(job(**RESTRICTED_SHAPES[shape]), CATALOG, config).pods:
        assert restricted(pod) == [], pod["metadata"]["name"]
        main = containers(pod)[contract.MAIN_CONTAINER]["securityContext"]
        assert main["runAsUser"] == contract.CATALOG_IMAGE_UID and main["runAsNonRoot"] is True


def test_a_custom_image_keeps_its_user_and_the_toolkit_stays_restricted() -> None:
    (pod,) = render(job(image="registry.example.com/me/tf:root"), CATALOG, CONFIG).pods
    assert "securityContext" not in containers(pod)[contract.MAIN_CONTAINER]
    assert baseline(pod) == []
    assert restricted(pod) == [
        "container tensorflow: allowPrivilegeEscalation is not false",
        "container tensorflow: capabilities do not drop ALL",
        "container tensorflow: runAsNonRoot is not true",
    ]


def test_the_restricted_check_refuses_what_the_admission_refuses() -> None:
    """The checker above can fail: each rule it knows, broken once."""
    (pod,) = render(job(), CATALOG, CONFIG).pods
    spec = pod["spec"]
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/var"}})
    del spec["securityContext"]["seccompProfile"]
    fetch = spec["initContainers"][0]
    fetch["securityContext"] = {**fetch["securityContext"], "allowPrivilegeEscalation": True, "runAsUser": 0}
    upload = spec["containers"][1]
    upload["securityContext"] = {"capabilities": {"add": ["SYS_ADMIN"]}, "privileged": True}
    found = restricted(pod)
    for expected in (
        "volume host is a hostPath",
        "volume host has a restricted type ['hostPath']",
        "container fetch: allowPrivilegeEscalation is not false",
        "container fetch: runAsUser is 0",
        "container upload: privileged",
        "container upload: adds capabilities ['SYS_ADMIN']",
        "container upload: capabilities do not drop ALL",
        "container upload: runAsNonRoot is not true",
        "container tensorflow: no seccompProfile (neither the pod's nor its own)",
    ):
        assert expected in found, (expected, found)
