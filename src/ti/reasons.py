"""Every reason the operator writes on a job, in one place: status.reason and the reasons of its
conditions (`Reason`), the reasons of the Kubernetes Events it records (`EventReason`), and why it
deletes a pod (`Deletion`).

As Kubeflow Trainer documents its condition reasons beside their constants, each member here carries
the one line that says when it is set; `docs/api.md` prints these lines (`python -m ti.api.docs`). No
reason is written as a bare string anywhere else in src/ (tests/unit/test_reasons.py checks it).

A job's reason can also be one the platform gave a pod, passed on as is: what the kubelet or the
control plane says of a failed pod (Evicted, Shutdown, NodeAffinity, ...) and `exit_code(n)` for a
container killed with code n. Pure constants: the toolkit, the catalog and local mode import them too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class _Documented(StrEnum):
    # A string whose members carry their documentation: Reason.COMPLETED == "Completed".
    doc: str
    _value_: str

    def __new__(cls, value: str, doc: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.doc = doc
        return member


class Reason(_Documented):
    """status.reason, and the reason of a condition's last transition."""

    # -- a job that failed (phase Failed; the Failed condition carries the same reason) --------------
    INVALID_SPEC = (
        "InvalidSpec",
        "The spec names an unknown instance type or framework version, or a local-mode type in a "
        "cluster; or the API server stored a spec the model refuses. No pod is created; the message "
        "lists the valid choices.",
    )
    TRAINING_FAILED = (
        "TrainingFailed",
        "The training script exited with code 1-127. failureReason is what it wrote to "
        "/opt/ml/output/failure, or the tail of its log. Not retried.",
    )
    DOWNLOAD_FAILED = (
        "DownloadFailed",
        "The download step (source, channels, checkpoints) exited with code 1-127, e.g. a URI that does "
        "not exist or credentials that do not allow reading it. Not retried.",
    )
    UPLOAD_FAILED = "UploadFailed", "The upload of model, output or logs to outputPath failed. Not retried."
    BACKOFF_LIMIT_EXCEEDED = (
        "BackoffLimitExceeded",
        "A platform fault (exit code 128 or more, eviction, preemption, a deleted pod, a lost node) "
        "happened again after runPolicy.backoffLimit retries.",
    )
    UNSCHEDULABLE = (
        "Unschedulable",
        "Some pod was not scheduled within runPolicy.schedulingTimeoutSeconds; every pod of the job was "
        "deleted so that it holds no GPUs.",
    )
    MAX_RUN_EXCEEDED = "MaxRunExceeded", "The job ran longer than spec.maxRunSeconds."
    INVALID_IMAGE = "InvalidImage", "The training or toolkit image name is not valid."
    IMAGE_PULL_FAILED = (
        "ImagePullFailed",
        "An image could not be pulled within runPolicy.schedulingTimeoutSeconds. Set at once while a "
        "container waits on its image (the job still Starting or Downloading), with the pod, container, "
        "image and the kubelet's message in the Running condition.",
    )
    CONTAINER_CONFIG_ERROR = (
        "ContainerConfigError",
        "A container could not be created within runPolicy.schedulingTimeoutSeconds, e.g. the storage "
        "Secret does not exist (set at once while it waits, the kubelet's message in the Running "
        "condition); or the training container could not start at all (no /bin/sh in its image): "
        "failed at once.",
    )
    FAILED_CREATE = (
        "FailedCreate",
        "The API server refused the job's pods (a missing ServiceAccount or PriorityClass, a "
        "ResourceQuota, an admission rule). The job waits in Pending and retries, the Created condition "
        "carrying the server's message; past runPolicy.schedulingTimeoutSeconds it fails and frees its "
        "pods.",
    )
    LOCAL_MODE_ERROR = "LocalModeError", "Local mode could not run the job at all (local mode only)."
    INVALID_CATALOG = (
        "InvalidCatalog",
        "The instance-type catalog file cannot be read or is not valid (the operator does not start).",
    )

    # -- a job that ended otherwise ------------------------------------------------------------------
    COMPLETED = "Completed", "Every worker finished with exit code 0 and the model was uploaded."
    STOPPED = "Stopped", "Stopped on request (runPolicy.stop)."
    SUSPENDED = "Suspended", "Suspended on request (runPolicy.suspend); its pods are deleted."

    # -- a job in a Kueue queue (label kueue.x-k8s.io/queue-name) ----------------------------------
    WAITING_FOR_QUOTA = (
        "WaitingForQuota",
        "Queued: Kueue has not admitted the job yet; the message names the LocalQueue and says why, in "
        "Kueue's words (no quota left, no such LocalQueue, an inactive ClusterQueue).",
    )
    EVICTED_BY_QUEUE = (
        "EvictedByQueue",
        "Queued: Kueue evicted the running job (preempted for a job of higher priority, a quota "
        "change, a deleted or stopped queue); its pods are deleted and the same attempt runs again "
        "once Kueue admits it again. Not counted against runPolicy.backoffLimit.",
    )
    QUEUE_UNAVAILABLE = (
        "QueueUnavailable",
        "Queued: the job names a Kueue queue, but the API server does not serve Kueue's API "
        "(kueue.x-k8s.io/v1beta2). Install Kueue or remove the label; looked at again every 30 s.",
    )
    PRIORITY_CLASS_NOT_FOUND = (
        "PriorityClassNotFound",
        "Queued: the label kueue.x-k8s.io/priority-class names a WorkloadPriorityClass that does not "
        "exist. No Workload is made until it does, as with Kueue's own integrations; looked at again "
        "every 10 s. Create the class, or remove the label to queue the job without a priority.",
    )
    QUEUE_FINISHED = (
        "QueueFinished",
        "Failed: the job's Workload was marked Finished by someone else than the operator before the "
        "job ended (Kueue gives up on a Workload it cannot start); the message has Kueue's words.",
    )
    ADMITTED = (
        "Admitted",
        "The Admitted condition turned True: Kueue admitted the job (ClusterQueue, flavors).",
    )

    # -- on the way ----------------------------------------------------------------------------------
    PODS_CREATED = "PodsCreated", "The Created condition turned True: the attempt's pods were created."
    WAITING_FOR_PODS = (
        "WaitingForPods",
        "Pending: pods of an earlier attempt, or of a deleted job of the same name, still hold the pod "
        "names; the next attempt's pods are created once they are gone.",
    )
    STOP_REQUESTED = "StopRequested", "Stopping: runPolicy.stop is true and the pods were sent SIGTERM."
    RESUMED = "Resumed", "The Suspended condition turned False: runPolicy.suspend is false again."
    RUNNING = "Running", "The Restarting condition turned False: the next attempt's instances run."

    # -- why an attempt is retried (status.reason while Pending, the Restarting condition) -----------
    PREEMPTED = "Preempted", "A pod was preempted by the scheduler for a pod of higher priority."
    NODE_LOST = "NodeLost", "A pod's node went away (not ready, deleted, or its pods garbage-collected)."
    EVICTED = "Evicted", "A pod was evicted (the Eviction API, a drain, node pressure)."
    DISRUPTED = "Disrupted", "A pod was disrupted for a reason Kubernetes did not name."
    POD_DELETED = "PodDeleted", "A pod of the attempt was deleted, or is gone, while the job ran."
    POD_FAILED = "PodFailed", "A pod failed without a container to blame and without a reason."
    OOM_KILLED = "OOMKilled", "A container was killed for using more memory than its instance type has."
    CONTAINER_FAILED = "ContainerFailed", "A container ended with a negative exit code (it never ran)."


# A container killed with exit code n (128 + a signal, e.g. ExitCode137 for SIGKILL): the platform's
# fault, retried. Documented in docs/api.md as EXIT_CODE_PATTERN.
EXIT_CODE_PATTERN = "ExitCode<n>"


def exit_code(code: int) -> str:
    """The reason of a container killed with exit code `code` (128 or more): ExitCode137 and so on."""
    return f"ExitCode{code}"


class EventReason(_Documented):
    """The reason of a Kubernetes Event the operator records on a job."""

    CREATED = "Created", "Normal: the pods of an attempt were created; the message names the attempt."
    RESTARTING = (
        "Restarting",
        "Warning: a platform fault; every instance is restarted, up to runPolicy.backoffLimit times.",
    )
    INSTANCE_FAILED = (
        "InstanceFailed",
        "Warning: one instance failed or was deleted; the message has its exit code and reason. Once "
        "per instance and attempt.",
    )
    COMPLETED = "Completed", "Normal: the job completed; the message names the model's URI."
    FAILED = "Failed", "Warning: the job failed; the message starts with status.reason."
    STOPPING = "Stopping", "Normal: runPolicy.stop is true; the pods were sent SIGTERM."
    STOPPED = "Stopped", "Normal: the job was stopped on request; what was uploaded is kept."
    SUSPENDED = "Suspended", "Normal: runPolicy.suspend is true; the pods are deleted, the job kept."
    RESUMED = "Resumed", "Normal: runPolicy.suspend is false again; the pods are recreated."
    QUEUED = (
        "Queued",
        "Normal: the job waits in its Kueue LocalQueue; no pod exists until Kueue admits it. Once per "
        "distinct reason.",
    )
    ADMITTED = "Admitted", "Normal: Kueue admitted the job; the message names the ClusterQueue and flavors."
    EVICTED_BY_QUEUE = (
        "EvictedByQueue",
        "Warning: Kueue evicted the job (the message has Kueue's reason and words); its pods are "
        "deleted, restartCount is unchanged, and it waits in its queue again.",
    )
    FAILED_CREATE = (
        "FailedCreate",
        "Warning: the API server refused the job's pods or Service; once per distinct message.",
    )
    IMAGE_PULL_FAILED = (
        "ImagePullFailed",
        "Warning: a container waits on an image that cannot be pulled; the message names the pod, "
        "container, image and the kubelet's message. Once per distinct message.",
    )
    CONTAINER_CONFIG_ERROR = (
        "ContainerConfigError",
        "Warning: a container cannot be created (a Secret it needs does not exist, say); the message "
        "has the kubelet's. Once per distinct message.",
    )
    RECONCILE_ERROR = (
        "ReconcileError",
        "Warning: a reconcile of the job raised; the message names the error class and what the API "
        "server said (never a request or credentials). Retried with exponential backoff (1 s doubling "
        "to 5 min); once per distinct error.",
    )


class KueueReason(_Documented):
    """Kueue's own words, read from and written to a job's Workload (`ti.operator.kueue`); not ours
    to choose, so they are kept apart from the job's reasons."""

    PREEMPTED = "Preempted", "Evicted: preempted for a workload of higher priority (Kueue requeues it)."
    NODE_FAILURES = "NodeFailures", "Evicted: a node it ran on failed (Kueue requeues it)."
    SUCCEEDED = "Succeeded", "Finished: written by the operator when the job Completed."
    FAILED = "Failed", "Finished: written by the operator when the job Failed or was Stopped."
    PENDING = "Pending", "QuotaReserved False: written by the operator when it clears an evicted admission."
    NO_RESERVATION = "NoReservation", "Admitted False: the Workload holds no quota reservation."
    DEACTIVATED = (
        "Deactivated",
        "Evicted: the Workload's spec.active is false (runPolicy.suspend, or by hand).",
    )


class Deletion(StrEnum):
    """Why the operator deletes a pod (logged with the deletion). A job's ending that frees every
    running pod whatever its cleanPodPolicy is logged with the job's Reason instead."""

    RETRY = "retry"  # a platform fault: every pod of the attempt goes before the next attempt's
    STOP = "stop"  # runPolicy.stop
    SUSPEND = "suspend"  # runPolicy.suspend
    QUEUE = "queue"  # Kueue evicted the job, or has not admitted it
    OUTDATED = "outdated"  # a pod of an earlier attempt
    CLEAN = "clean"  # runPolicy.cleanPodPolicy, once the job finished
