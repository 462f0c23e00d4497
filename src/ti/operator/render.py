"""Job → Kubernetes objects: one pod per instance, and a headless Service for multi-instance jobs.

Pure: the same job, catalog, configuration, attempt and clock give the same manifests, in the
cluster and in local mode (which runs these pods' containers as processes).

Pod shape (the TI container contract, names from `ti.contract`):
  init `fetch`       toolkit image: source, channels, config files, checkpoints, the launcher
  main `tensorflow`  framework or custom image: the user's script with the TM_* environment
  `upload`           toolkit image: waits for the main container, then model, output, logs
The object-store Secret reaches the toolkit containers only, never the user's.

TF_CONFIG. Hosts are `<pod>.<job>.<namespace>.svc:2222`, resolved through the headless Service
`<job>` and each pod's hostname/subdomain. multiWorkerMirrored: cluster {"worker": [...]}, worker i
is task {"type": "worker", "index": i}. parameterServer follows ParameterServerStrategy's and the
Estimator's convention that a chief exists: worker 0 is {"type": "chief", "index": 0}, workers 1..n-1
are {"type": "worker", "index": i-1}, and the ps pods are {"type": "ps", "index": j}.
TM_HOSTS lists the workers only (TI's train_instance_count); parameter servers are extra pods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ti import contract
from ti.api import API_VERSION, KIND, DistributionType, InstanceRef, TFTrainingJob
from ti.catalog import Catalog, InstanceType
from ti.operator.settings import OperatorConfig

TF_PORT = 2222
TF_PORT_NAME = "tf"
MANAGED_BY = {"app.kubernetes.io/managed-by": "ti-operator"}


@dataclass(frozen=True)
class Instance:
    """One rendered instance: its role, index, pod name and TF_CONFIG address."""

    role: str
    index: int
    name: str
    address: str


@dataclass(frozen=True)
class Rendered:
    """Everything a job needs in the cluster, as plain manifests."""

    pods: list[dict[str, Any]]
    service: dict[str, Any] | None
    instances: list[Instance] = field(default_factory=list)
    image: str = ""
    instance_type: InstanceType | None = None


def render(
    job: TFTrainingJob,
    catalog: Catalog,
    config: OperatorConfig,
    attempt: int = 0,
    *,
    now: datetime | None = None,
    cluster: bool = True,
) -> Rendered:
    """The pods (and Service) of `job` for retry `attempt`.

    Raises `CatalogError` (reason InvalidSpec) for an unknown instance type or framework version, or a
    local-mode type when `cluster` is true. `now` with status.startTime shortens the pods'
    activeDeadlineSeconds to the max run time left.
    """
    itype, image = check(job, catalog, cluster=cluster)
    instances = [_instance(job, ref) for ref in job.instances()]
    toolkit_image = config.toolkit_image or catalog.toolkit_image
    pods = [_pod(job, inst, itype, image, toolkit_image, config, attempt, now) for inst in instances]
    return Rendered(
        pods=pods,
        service=service(job) if job.spec.distributed else None,
        instances=instances,
        image=image,
        instance_type=itype,
    )


def check(job: TFTrainingJob, catalog: Catalog, *, cluster: bool = True) -> tuple[InstanceType, str]:
    """The instance type and training image of `job`; raises `CatalogError` as `render` would."""
    itype = catalog.instance_type(job.spec.instance_type, cluster=cluster)
    image = catalog.training_image(
        image=job.spec.image, framework_version=job.spec.framework_version, gpu=itype.gpus > 0
    )
    return itype, image


def address(job: TFTrainingJob, name: str) -> str:
    """`host:port` of an instance in TF_CONFIG (local mode rewrites these to loopback ports)."""
    return f"{name}.{job.name}.{job.namespace}.svc:{TF_PORT}"


def tf_config(job: TFTrainingJob, role: str, index: int) -> dict[str, Any] | None:
    """TF_CONFIG of one instance, or None for a single instance without parameter servers."""
    if not job.spec.distributed:
        return None
    refs = job.instances()
    workers = [address(job, r.name) for r in refs if r.role == contract.ROLE_WORKER]
    ps = [address(job, r.name) for r in refs if r.role == contract.ROLE_PS]
    if job.spec.distribution.type == DistributionType.PARAMETER_SERVER:
        cluster: dict[str, list[str]] = {"chief": workers[:1]}
        if workers[1:]:
            cluster["worker"] = workers[1:]
        cluster["ps"] = ps
        if role == contract.ROLE_PS:
            task = {"type": "ps", "index": index}
        elif index == 0:
            task = {"type": "chief", "index": 0}
        else:
            task = {"type": "worker", "index": index - 1}
    else:
        cluster = {"worker": workers}
        task = {"type": "worker", "index": index}
    return {"cluster": cluster, "task": task}


def service(job: TFTrainingJob) -> dict[str, Any]:
    """The headless Service that gives every pod of a multi-instance job its DNS name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, job.name, {contract.LABEL_JOB: job.name}),
        "spec": {
            "clusterIP": "None",
            "selector": {contract.LABEL_JOB: job.name},
            # Peers must resolve each other while still downloading, before any readiness.
            "publishNotReadyAddresses": True,
            "ports": [{"name": TF_PORT_NAME, "port": TF_PORT, "targetPort": TF_PORT, "protocol": "TCP"}],
        },
    }


def training_env(job: TFTrainingJob, inst: Instance, itype: InstanceType) -> list[dict[str, str]]:
    """The TM_* environment and TF_CONFIG of one instance, without spec.env."""
    spec = job.spec
    channels = sorted(spec.inputs)
    hosts = [r.name for r in job.instances() if r.role == contract.ROLE_WORKER]
    env = {
        contract.TM_MODEL_DIR: contract.MODEL_DIR,
        contract.TM_OUTPUT_DATA_DIR: contract.OUTPUT_DATA_DIR,
        contract.TM_INPUT_CONFIG_DIR: contract.INPUT_CONFIG_DIR,
        contract.TM_NUM_GPUS: str(itype.gpus),
        contract.TM_NUM_CPUS: str(itype.num_cpus),
        contract.TM_CHANNELS: json.dumps(channels),
        **{contract.channel_env(name): contract.channel_dir(name) for name in channels},
        contract.TM_HPS: json.dumps(spec.hyperparameters, sort_keys=True),
        contract.TM_HOSTS: json.dumps(hosts),
        contract.TM_CURRENT_HOST: inst.name,
    }
    if spec.checkpoint_path:
        env[contract.TM_CHECKPOINT_DIR] = contract.CHECKPOINT_DIR
    config = tf_config(job, inst.role, inst.index)
    if config is not None:
        env[contract.TF_CONFIG] = json.dumps(config)
    # Unbuffered output, so log streaming shows a line when the script prints it.
    env["PYTHONUNBUFFERED"] = "1"
    return _env_list(env)


def toolkit_env(
    job: TFTrainingJob, inst: Instance, itype: InstanceType, config: OperatorConfig
) -> list[dict[str, str]]:
    """What the fetch and upload steps read: the TM_* environment plus the TI_* toolkit variables."""
    spec = job.spec
    env = {
        contract.TI_JOB_NAME: job.name,
        contract.TI_SOURCE_DIR: spec.source_dir or "",
        contract.TI_ENTRY_POINT: spec.entry_point,
        contract.TI_INPUTS: json.dumps(dict(sorted(spec.inputs.items()))),
        contract.TI_OUTPUT_PATH: spec.output_path,
        contract.TI_CHECKPOINT_PATH: spec.checkpoint_path or "",
        contract.TI_INSTANCE_INDEX: str(inst.index),
        contract.TI_INSTANCE_ROLE: inst.role,
        contract.TI_METRIC_DEFINITIONS: json.dumps(
            [m.model_dump(by_alias=True) for m in spec.metric_definitions]
        ),
        contract.TI_CHECKPOINT_SYNC_SECONDS: str(config.checkpoint_sync_seconds),
        contract.TI_LAUNCHER_START_SECONDS: str(spec.run_policy.scheduling_timeout_seconds),
    }
    if config.cos_region:
        env[contract.TENCENTCLOUD_REGION] = config.cos_region
    if config.cos_endpoint:
        env[contract.COS_ENDPOINT] = config.cos_endpoint
    return training_env(job, inst, itype) + _env_list(env)


def storage_secret(job: TFTrainingJob, config: OperatorConfig) -> str | None:
    """The Secret holding the object-store credentials: the job's own, else the operator's default."""
    if job.spec.storage_secret_ref is not None:
        return job.spec.storage_secret_ref.name
    return config.storage_secret


def pod_labels(job: TFTrainingJob, role: str, index: int, attempt: int) -> dict[str, str]:
    return {
        **MANAGED_BY,
        contract.LABEL_JOB: job.name,
        contract.LABEL_ROLE: role,
        contract.LABEL_INDEX: str(index),
        contract.LABEL_ATTEMPT: str(attempt),
    }


def owner_reference(job: TFTrainingJob) -> dict[str, Any] | None:
    if not job.metadata.uid:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def active_deadline_seconds(job: TFTrainingJob, now: datetime | None) -> int:
    """Max run time left: the whole of maxRunSeconds until the job has started, then what remains."""
    limit = job.spec.max_run_seconds
    started = job.status.start_time if job.status else None
    if now is None or started is None:
        return limit
    return max(1, limit - int((now - started).total_seconds()))


# ---- security: Pod Security Standard `restricted` where the image allows it -----------------------
# restricted asks of every container: allowPrivilegeEscalation false, capabilities drop ALL (add at most
# NET_BIND_SERVICE), runAsNonRoot true, seccompProfile RuntimeDefault or Localhost (pod or container).
# Our toolkit containers meet all of it, and so does the main container with a catalog image (those run
# as any user). A custom image keeps its own user, which may be root, and whatever capabilities its
# runtime gives (a script may apt-get or chown); restricted would need runAsNonRoot, which the operator
# cannot promise for an image it does not know, so such a pod runs in namespaces up to `baseline`
# (docs/container-contract.md says so). The pod-level seccomp profile and fsGroup apply to it too.


def pod_security_context() -> dict[str, Any]:
    """The pod's securityContext: the shared volume's group, and the runtime's default seccomp profile."""
    return {
        # Every container gets this group; fetch makes /opt/ml group-writable and setgid, so a main
        # container of any user writes the model, the log and the exit code.
        "fsGroup": contract.POD_FS_GROUP,
        # The only volumes are new emptyDirs: one chown of the root, never a walk of a tree.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _confined() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def toolkit_security_context() -> dict[str, Any]:
    """fetch and upload: restricted, as the toolkit image's user (numeric, so runAsNonRoot is checkable
    whatever user an overriding toolkit image names)."""
    uid = contract.TOOLKIT_UID
    return {**_confined(), "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid}


def main_security_context(*, custom_image: bool) -> dict[str, Any] | None:
    """The training container: restricted with a catalog image; None (the image's own) for a custom one."""
    if custom_image:
        return None
    uid = contract.CATALOG_IMAGE_UID
    return {**_confined(), "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid}


# ---- pieces ---------------------------------------------------------------------------------------


def _instance(job: TFTrainingJob, ref: InstanceRef) -> Instance:
    return Instance(role=ref.role, index=ref.index, name=ref.name, address=address(job, ref.name))


def _metadata(job: TFTrainingJob, name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**MANAGED_BY, **labels}}
    if job.metadata.namespace:
        meta["namespace"] = job.metadata.namespace
    owner = owner_reference(job)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in env.items()]


def _pod(
    job: TFTrainingJob,
    inst: Instance,
    itype: InstanceType,
    image: str,
    toolkit_image: str,
    config: OperatorConfig,
    attempt: int,
    now: datetime | None,
) -> dict[str, Any]:
    spec = job.spec
    mount = [{"name": contract.ML_VOLUME, "mountPath": contract.ML_ROOT}]
    secret = storage_secret(job, config)
    env_from = [{"secretRef": {"name": secret}}] if secret else []
    tools = toolkit_env(job, inst, itype, config)
    toolkit_resources = {
        "requests": {"cpu": config.toolkit_cpu, "memory": config.toolkit_memory},
        "limits": {"memory": config.toolkit_memory_limit},
    }

    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": itype.cpu_quantity, "memory": itype.memory},
        "limits": {"cpu": itype.cpu_quantity, "memory": itype.memory},
    }
    if itype.gpus:
        resources["requests"][itype.gpu_resource] = str(itype.gpus)
        resources["limits"][itype.gpu_resource] = str(itype.gpus)

    main: dict[str, Any] = {
        "name": contract.MAIN_CONTAINER,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": contract.main_command(spec.entry_point, spec.hyperparameters),
        "env": training_env(job, inst, itype) + [{"name": e.name, "value": e.value} for e in spec.env],
        "resources": resources,
        "volumeMounts": list(mount),
        # A failing script's reason (or its log tail) becomes the job's status.failureReason: the launcher
        # copies the failure file here. Never a path inside /opt/ml: the kubelet bind-mounts its own file
        # at this path, which would hide the script's file and refuse the launcher's rm and mv.
        "terminationMessagePath": contract.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    main_context = main_security_context(custom_image=bool(spec.image))
    if main_context is not None:
        main["securityContext"] = main_context
    volumes: list[dict[str, Any]] = [
        {"name": contract.ML_VOLUME, "emptyDir": {"sizeLimit": f"{spec.volume_size_gb}Gi"}}
    ]
    if itype.gpus > 1:
        # NCCL between GPUs of one pod needs more shared memory than the container default of 64 MiB.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        main["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    if spec.distributed:
        main["ports"] = [{"name": TF_PORT_NAME, "containerPort": TF_PORT, "protocol": "TCP"}]

    def toolkit(name: str, command: list[str]) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": name,
            "image": toolkit_image,
            "imagePullPolicy": config.image_pull_policy,
            "command": list(command),
            "env": [dict(e) for e in tools],
            "resources": toolkit_resources,
            "volumeMounts": list(mount),
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": toolkit_security_context(),
        }
        if env_from:
            container["envFrom"] = [dict(e) for e in env_from]
        return container

    pod_spec: dict[str, Any] = {
        "serviceAccountName": spec.role,
        # The operator owns retries: a failed container must fail the pod, not restart in place.
        "restartPolicy": "Never",
        # Service links would flood the script's environment with every Service of the namespace.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": config.stop_grace_seconds,
        "securityContext": pod_security_context(),
        "activeDeadlineSeconds": active_deadline_seconds(job, now),
        "initContainers": [toolkit(contract.FETCH_CONTAINER, contract.FETCH_COMMAND)],
        "containers": [main, toolkit(contract.UPLOAD_CONTAINER, contract.UPLOAD_COMMAND)],
        "volumes": volumes,
    }
    if spec.distributed:
        pod_spec["hostname"] = inst.name
        pod_spec["subdomain"] = job.name
    if itype.node_selector:
        pod_spec["nodeSelector"] = dict(itype.node_selector)
    if itype.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in itype.tolerations]
    if spec.run_policy.scheduler_name:
        pod_spec["schedulerName"] = spec.run_policy.scheduler_name
    if spec.run_policy.priority_class_name:
        pod_spec["priorityClassName"] = spec.run_policy.priority_class_name

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(job, inst.name, pod_labels(job, inst.role, inst.index, attempt)),
        "spec": pod_spec,
    }
