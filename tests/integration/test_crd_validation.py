"""The CRD as the API server enforces it: invalid jobs refused with a message a user can act on, the
spec frozen except suspend/stop/TTL, printer columns and `kubectl explain` from the field descriptions.

No operator runs here: every refusal comes from kube-apiserver itself (OpenAPI schema and CEL rules).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.jobs import BUCKET, job_manifest, patch_job

pytestmark = pytest.mark.integration

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def ns(control_plane: ControlPlane, crd: Path) -> Iterator[str]:
    name = "crd-validation"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def spec(**changes: Any) -> Callable[[Manifest], None]:
    def edit(m: Manifest) -> None:
        m["spec"].update(changes)

    return edit


def run_policy(**changes: Any) -> Callable[[Manifest], None]:
    def edit(m: Manifest) -> None:
        m["spec"].setdefault("runPolicy", {}).update(changes)

    return edit


def without(field: str) -> Callable[[Manifest], None]:
    def edit(m: Manifest) -> None:
        del m["spec"][field]

    return edit


def named(name: str) -> Callable[[Manifest], None]:
    def edit(m: Manifest) -> None:
        m["metadata"]["name"] = name

    return edit


# (id, edit of a valid manifest, what the API server must say: every fragment must appear)
INVALID: list[tuple[str, Callable[[Manifest], None], list[str]]] = [
    (
        "instance-count-zero",
        spec(instanceCount=0),
        ["spec.instanceCount: Invalid value: 0", "should be greater than or equal to 1"],
    ),
    (
        "instance-count-too-big",
        spec(instanceCount=1001),
        ["spec.instanceCount: Invalid value: 1001", "should be less than or equal to 1000"],
    ),
    (
        "backoff-limit-negative",
        run_policy(backoffLimit=-1),
        ["spec.runPolicy.backoffLimit: Invalid value: -1", "should be greater than or equal to 0"],
    ),
    (
        "scheduling-timeout-zero",
        run_policy(schedulingTimeoutSeconds=0),
        ["spec.runPolicy.schedulingTimeoutSeconds: Invalid value: 0", "greater than or equal to 1"],
    ),
    (
        "max-run-over-30-days",
        spec(maxRunSeconds=30 * 86400 + 1),
        ["spec.maxRunSeconds: Invalid value: 2592001", "less than or equal to 2592000"],
    ),
    (
        "volume-zero",
        spec(volumeSizeGB=0),
        ["spec.volumeSizeGB: Invalid value: 0", "greater than or equal to 1"],
    ),
    (
        "clean-pod-policy-enum",
        run_policy(cleanPodPolicy="Sometimes"),
        ['spec.runPolicy.cleanPodPolicy: Unsupported value: "Sometimes"', '"None", "Running", "All"'],
    ),
    (
        "py-version-enum",
        spec(pyVersion="py2"),
        ['spec.pyVersion: Unsupported value: "py2"', 'supported values: "py3"'],
    ),
    (
        "distribution-enum",
        spec(distribution={"type": "ring"}),
        ['spec.distribution.type: Unsupported value: "ring"', '"multiWorkerMirrored", "parameterServer"'],
    ),
    (
        "framework-version-pattern",
        spec(frameworkVersion="latest"),
        ['spec.frameworkVersion: Invalid value: "latest"', "should match '^[0-9]+(\\.[0-9]+){0,2}$'"],
    ),
    (
        "output-path-file-uri",
        spec(outputPath="file:///tmp/out"),
        ['spec.outputPath: Invalid value: "file:///tmp/out"', "should match '^(cos|s3)://"],
    ),
    (
        "channel-file-uri",
        spec(inputs={"training": "file:///data/train"}),
        ['spec.inputs.training: Invalid value: "file:///data/train"', "should match '^(cos|s3)://"],
    ),
    (
        "source-dir-http",
        spec(sourceDir="https://example.com/src.tar.gz"),
        ["spec.sourceDir: Invalid value", "should match '^(cos|s3)://"],
    ),
    (
        "channel-name-dash",
        spec(inputs={"train-data": f"{BUCKET}/data"}),
        ["spec.inputs: Invalid value", "channel names start with a letter", "TM_CHANNEL_<NAME>"],
    ),
    (
        "channel-name-digit",
        spec(inputs={"1st": f"{BUCKET}/data"}),
        ["spec.inputs: Invalid value", "channel names start with a letter"],
    ),
    (
        "missing-output-path",
        without("outputPath"),
        ["spec.outputPath: Required value"],
    ),
    (
        "missing-instance-type",
        without("instanceType"),
        ["spec.instanceType: Required value"],
    ),
    (
        "missing-entry-point",
        without("entryPoint"),
        ["spec.entryPoint: Required value"],
    ),
    (
        "neither-framework-nor-image",
        without("frameworkVersion"),
        ["set frameworkVersion (a preset TensorFlow image) or image (a custom image)"],
    ),
    (
        "reserved-env",
        spec(env=[{"name": "TM_NUM_GPUS", "value": "8"}]),
        ["spec.env[0]: Invalid value", "TM_* and TF_CONFIG are set by the platform and cannot be overridden"],
    ),
    (
        "tf-config-env",
        spec(env=[{"name": "TF_CONFIG", "value": "{}"}]),
        ["TM_* and TF_CONFIG are set by the platform"],
    ),
    (
        "entry-point-escapes",
        spec(entryPoint="lib/../../etc/x.py"),
        ["spec.entryPoint: Invalid value", "entryPoint must stay inside sourceDir"],
    ),
    (
        "hyperparameter-name",
        spec(hyperparameters={"learning rate": "0.1"}),
        ["spec.hyperparameters: Invalid value", "hyperparameter names are letters, digits"],
    ),
    (
        "hyperparameter-value-too-long",
        spec(hyperparameters={"notes": "x" * 4097}),
        ["spec.hyperparameters.notes: Too long: may not be more than 4096"],
    ),
    (
        "ps-count-without-ps",
        spec(distribution={"type": "multiWorkerMirrored", "parameterServerCount": 2}),
        [
            "spec.distribution: Invalid value",
            "parameterServerCount is only allowed with type parameterServer",
        ],
    ),
    (
        "role-not-a-name",
        spec(role="Trainer_Role"),
        ['spec.role: Invalid value: "Trainer_Role"', "should match"],
    ),
    (
        "secret-ref-not-a-name",
        spec(storageSecretRef={"name": "COS Keys"}),
        ['spec.storageSecretRef.name: Invalid value: "COS Keys"', "should match"],
    ),
    (
        "name-with-dots",
        named("mnist.v2"),
        ["metadata.name must be a DNS label of at most 50 characters"],
    ),
    (
        "name-too-long",
        named("j" * 51),
        ["metadata.name must be a DNS label of at most 50 characters"],
    ),
    (
        "unknown-field",
        spec(instanceTypo="ML.GN8.3XLARGE112"),
        ['unknown field "spec.instanceTypo"'],
    ),
]


@pytest.mark.parametrize(("edit", "said"), [(e, s) for _, e, s in INVALID], ids=[i for i, _, _ in INVALID])
def test_the_api_server_refuses_an_invalid_job_and_says_why(
    control_plane: ControlPlane, ns: str, edit: Callable[[Manifest], None], said: list[str]
) -> None:
    manifest = copy.deepcopy(job_manifest("refused"))
    edit(manifest)
    proc = control_plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    for fragment in said:
        assert fragment in proc.stderr, f"{fragment!r} not in:\n{proc.stderr}"
    name = manifest["metadata"]["name"]
    assert control_plane.kubectl("get", "tftj", name, "-n", ns, check=False).returncode != 0


def test_a_valid_job_is_accepted_with_its_defaults(control_plane: ControlPlane, ns: str) -> None:
    # The baseline every refusal above departs from: it must itself be valid.
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(job_manifest("accepted")))
    body = json.loads(control_plane.kubectl("get", "tftj", "accepted", "-n", ns, "-o", "json").stdout)
    policy = body["spec"]["runPolicy"]
    assert policy["backoffLimit"] == 3
    assert policy["schedulingTimeoutSeconds"] == 900
    assert policy["cleanPodPolicy"] == "Running"
    assert policy["suspend"] is False and policy["stop"] is False
    assert body["spec"]["maxRunSeconds"] == 86400
    assert body["spec"]["distribution"] == {"type": "multiWorkerMirrored"}


FROZEN: list[tuple[dict[str, Any], str]] = [
    ({"instanceCount": 2}, "spec.instanceCount cannot change after the job is created"),
    ({"instanceType": "ML.GN8.LARGE56"}, "spec.instanceType cannot change"),
    ({"inputs": {"training": f"{BUCKET}/other"}}, "spec.inputs cannot change"),
    ({"hyperparameters": {"epochs": "9"}}, "spec.hyperparameters cannot change"),
    ({"image": "example.com/custom:1"}, "spec.image cannot change"),
    ({"runPolicy": {"backoffLimit": 9}}, "spec.runPolicy.backoffLimit cannot change"),
    (
        {"runPolicy": {"schedulingTimeoutSeconds": 60}},
        "spec.runPolicy.schedulingTimeoutSeconds cannot change",
    ),
]


def test_the_spec_is_frozen_except_suspend_stop_and_ttl(control_plane: ControlPlane, ns: str) -> None:
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(job_manifest("frozen")))
    for change, said in FROZEN:
        proc = control_plane.kubectl(
            "patch",
            "tftj",
            "frozen",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": change}),
            check=False,
        )
        assert proc.returncode != 0, f"{change} was accepted"
        assert said in proc.stderr and "create a new job instead" in proc.stderr, proc.stderr
    # A changed manifest re-applied is refused the same way (the GitOps path).
    edited = job_manifest("frozen", instanceCount=4)
    proc = control_plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(edited), check=False)
    assert proc.returncode != 0 and "spec.instanceCount cannot change" in proc.stderr

    for allowed in ({"suspend": True}, {"suspend": False}, {"ttlSecondsAfterFinished": 60}, {"stop": True}):
        patch_job(control_plane, ns, "frozen", {"spec": {"runPolicy": allowed}})
    spec_now = json.loads(control_plane.kubectl("get", "tftj", "frozen", "-n", ns, "-o", "json").stdout)[
        "spec"
    ]
    assert spec_now["instanceCount"] == 1
    assert spec_now["runPolicy"]["stop"] is True and spec_now["runPolicy"]["ttlSecondsAfterFinished"] == 60


def test_kubectl_get_shows_the_printer_columns(control_plane: ControlPlane, ns: str) -> None:
    manifest = job_manifest("columns", instanceCount=4)
    manifest["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "main"}
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest))
    status = {"phase": "Failed", "reason": "BackoffLimitExceeded", "restartCount": 3}
    patch_job(control_plane, ns, "columns", {"status": status}, "--subresource=status")

    def table(*extra: str) -> tuple[list[str], list[str]]:
        out = control_plane.kubectl("get", "tftj", "columns", "-n", ns, *extra).stdout.splitlines()
        return out[0].split(), out[1].split()

    header, row = table()
    assert header == ["NAME", "PHASE", "INSTANCES", "TYPE", "FRAMEWORK", "REASON", "AGE"]
    assert row[:6] == ["columns", "Failed", "4", "ML.GN8.3XLARGE112", "2.0.0", "BackoffLimitExceeded"]
    header, row = table("-o", "wide")
    assert header == [
        "NAME", "PHASE", "INSTANCES", "TYPE", "FRAMEWORK", "REASON", "RESTARTS", "QUEUE", "IMAGE", "AGE"
    ]  # fmt: skip
    assert row[6] == "3" and row[7] == "main"  # the Kueue LocalQueue, from the job's label
    # The short name and the "ti" category both find it.
    assert "columns" in control_plane.kubectl("get", "ti", "-n", ns).stdout


def test_kubectl_explain_teaches_the_fields(control_plane: ControlPlane, crd: Path) -> None:
    out = control_plane.kubectl("explain", "tftj.spec.inputs").stdout
    assert "inputs\t<map[string]string>" in out or "inputs <map[string]string>" in " ".join(out.split())
    text = " ".join(out.split())
    assert "Input channels: channel name -> object-store URI" in text
    assert "TM_CHANNEL_<NAME>" in text
    stop = " ".join(control_plane.kubectl("explain", "tftj.spec.runPolicy.stop").stdout.split())
    assert "true stops the job: its pods get SIGTERM" in stop
    top = " ".join(control_plane.kubectl("explain", "tftj.spec").stdout.split())
    for field in ("instanceType", "instanceCount", "frameworkVersion", "outputPath", "runPolicy"):
        assert field in top
