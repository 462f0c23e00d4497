"""The TI container contract: one place for the paths, variables, container names and object keys
that the renderer (pods), the toolkit (inside pods) and local mode must agree on.

Pure constants and string functions; nothing here touches a cluster or a store.
"""

from __future__ import annotations

import re

from ti.reasons import Reason

# ---- the /opt/ml layout inside every training container -------------------------------------------
ML_ROOT = "/opt/ml"
CODE_DIR = f"{ML_ROOT}/code"
INPUT_DIR = f"{ML_ROOT}/input"
INPUT_DATA_DIR = f"{INPUT_DIR}/data"
INPUT_CONFIG_DIR = f"{INPUT_DIR}/config"
MODEL_DIR = f"{ML_ROOT}/model"
OUTPUT_DIR = f"{ML_ROOT}/output"
OUTPUT_DATA_DIR = f"{OUTPUT_DIR}/data"
FAILURE_FILE = f"{OUTPUT_DIR}/failure"
CHECKPOINT_DIR = f"{ML_ROOT}/checkpoints"
# Our own bookkeeping inside the shared volume: the launcher script, the main container's exit code
# and its log. Hidden so a user's `ls /opt/ml` sees only the contract.
TI_DIR = f"{ML_ROOT}/.ti"
LAUNCHER = f"{TI_DIR}/launch.sh"
EXIT_CODE_FILE = f"{TI_DIR}/exitcode"
LOG_FILE = f"{TI_DIR}/training.log"
UPLOAD_FAILURE_FILE = f"{TI_DIR}/upload-failure"

HYPERPARAMETERS_FILE = "hyperparameters.json"
INPUT_DATA_CONFIG_FILE = "inputdataconfig.json"
RESOURCE_CONFIG_FILE = "resourceconfig.json"

# Local mode maps ML_ROOT to a work directory; every tool reads the root from this variable.
ML_ROOT_ENV = "TI_ML_ROOT"

# ---- containers of a training pod -----------------------------------------------------------------
FETCH_CONTAINER = "fetch"  # init: source, channels, config files, checkpoints, the launcher
MAIN_CONTAINER = "tensorflow"  # the user's script, in the framework or custom image
UPLOAD_CONTAINER = "upload"  # waits for the main container, then model, output, logs, checkpoints
ML_VOLUME = "ml"

FETCH_COMMAND = ["ti-toolkit", "fetch"]
UPLOAD_COMMAND = ["ti-toolkit", "upload"]

# Exit code of the upload container when the upload failed; its termination message starts with
# UPLOAD_FAILED_REASON so status derivation can tell it from the script's own failure.
UPLOAD_FAILED_EXIT_CODE = 70
UPLOAD_FAILED_REASON = Reason.UPLOAD_FAILED
FAILURE_MESSAGE_LIMIT = 4096

# ---- variables the training script sees ------------------------------------------------
TM_MODEL_DIR = "TM_MODEL_DIR"
TM_NUM_GPUS = "TM_NUM_GPUS"
TM_NUM_CPUS = "TM_NUM_CPUS"
TM_OUTPUT_DATA_DIR = "TM_OUTPUT_DATA_DIR"
TM_CHANNELS = "TM_CHANNELS"
TM_HPS = "TM_HPS"
TM_HOSTS = "TM_HOSTS"
TM_CURRENT_HOST = "TM_CURRENT_HOST"
TM_INPUT_CONFIG_DIR = "TM_INPUT_CONFIG_DIR"
TM_CHECKPOINT_DIR = "TM_CHECKPOINT_DIR"
TF_CONFIG = "TF_CONFIG"

# ---- variables only our toolkit reads (fetch / upload steps) ---------------------------------------
TI_JOB_NAME = "TI_JOB_NAME"
TI_SOURCE_DIR = "TI_SOURCE_DIR"  # URI of sourcedir.tar.gz, or empty
TI_ENTRY_POINT = "TI_ENTRY_POINT"
TI_INPUTS = "TI_INPUTS"  # JSON: channel name -> URI
TI_OUTPUT_PATH = "TI_OUTPUT_PATH"
TI_CHECKPOINT_PATH = "TI_CHECKPOINT_PATH"
TI_INSTANCE_INDEX = "TI_INSTANCE_INDEX"  # 0 is the chief: it uploads the model
TI_INSTANCE_ROLE = "TI_INSTANCE_ROLE"  # worker | ps
TI_METRIC_DEFINITIONS = "TI_METRIC_DEFINITIONS"  # JSON list of {name, regex}
TI_CHECKPOINT_SYNC_SECONDS = "TI_CHECKPOINT_SYNC_SECONDS"

# ---- object-store settings (Tencent Cloud's usual names, plus overrides for private clouds) -------
TENCENTCLOUD_SECRETID = "TENCENTCLOUD_SECRETID"
TENCENTCLOUD_SECRETKEY = "TENCENTCLOUD_SECRETKEY"
TENCENTCLOUD_SESSIONTOKEN = "TENCENTCLOUD_SESSIONTOKEN"
TENCENTCLOUD_REGION = "TENCENTCLOUD_REGION"
COS_ENDPOINT = "TI_COS_ENDPOINT"  # e.g. http://127.0.0.1:9000 for a private or test server

# ---- labels and annotations ---------------------------------------------------------------------------
GROUP = "training.ti.io"
LABEL_JOB = f"{GROUP}/job-name"
LABEL_ROLE = f"{GROUP}/role"
LABEL_INDEX = f"{GROUP}/instance-index"
LABEL_ATTEMPT = f"{GROUP}/attempt"
# Kueue's labels on a job (its own names, the same on every job kind Kueue admits): the LocalQueue it
# waits in, and the WorkloadPriorityClass that orders it there.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# On a job's Workload: the operator deactivated it for runPolicy.suspend, so it reactivates it when
# the job is resumed (a Workload someone else deactivated stays so).
ANNOTATION_SUSPENDED = f"{GROUP}/suspended"

ROLE_WORKER = "worker"
ROLE_PS = "ps"

_CHANNEL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,62}$")
CHANNEL_NAME_PATTERN = _CHANNEL_RE.pattern


def channel_env(name: str) -> str:
    """`train` → `TM_CHANNEL_TRAIN`."""
    return f"TM_CHANNEL_{name.upper()}"


def channel_dir(name: str, root: str = ML_ROOT) -> str:
    return f"{root}/input/data/{name}"


def instance_name(job: str, role: str, index: int) -> str:
    """Deterministic pod (and host) name of one instance: a restart can never create a second one."""
    return f"{job}-{role}-{index}"


def job_prefix(output_path: str, job: str) -> str:
    return f"{output_path.rstrip('/')}/{job}"


def model_uri(output_path: str, job: str) -> str:
    return f"{job_prefix(output_path, job)}/output/model.tar.gz"


def output_data_uri(output_path: str, job: str) -> str:
    return f"{job_prefix(output_path, job)}/output/output.tar.gz"


def log_uri(output_path: str, job: str, host: str) -> str:
    return f"{job_prefix(output_path, job)}/logs/{host}.log"


def source_uri(output_path: str, job: str) -> str:
    return f"{job_prefix(output_path, job)}/source/sourcedir.tar.gz"


def hyperparameter_args(hyperparameters: dict[str, str]) -> list[str]:
    """Hyperparameters as the script's command-line arguments, in a stable order."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        args += [f"--{key}", str(hyperparameters[key])]
    return args


def main_command(entry_point: str, hyperparameters: dict[str, str]) -> list[str]:
    """The main container's command: our POSIX launcher (placed by the fetch step) runs the script."""
    return ["/bin/sh", LAUNCHER, entry_point, *hyperparameter_args(hyperparameters)]


# ---- toolkit bookkeeping (added by the data-plane issue) ------------------------------------------
# The fetch step's failure reason, and the upload step's final metrics as JSON ({"metrics": {...}}),
# beside the termination messages, so local mode (which has no kubelet) can read them too.
FETCH_FAILURE_FILE = f"{TI_DIR}/fetch-failure"
METRICS_FILE = f"{TI_DIR}/metrics.json"
# Where the toolkit writes its termination message; Kubernetes' default path unless overridden
# (local mode points it into the work directory).
TERMINATION_LOG_ENV = "TI_TERMINATION_LOG"
TERMINATION_LOG = "/dev/termination-log"
DOWNLOAD_FAILED_EXIT_CODE = 1
# Upper bound on the unpacked size of sourcedir.tar.gz (bytes); an archive over it is refused.
TI_SOURCE_MAX_BYTES = "TI_SOURCE_MAX_BYTES"

# ---- users and permissions in the shared volume (added by the real-node issue) --------------------
# The toolkit image's user, and the group every container of a training pod gets (the pod's fsGroup):
# fetch creates /opt/ml group-writable and setgid, so a main container of any user can write it.
TOOLKIT_UID = 65532
POD_FS_GROUP = 65532
# Catalog images (the upstream TensorFlow images and ours) run as any user: they run as this one, so
# the whole pod meets the Pod Security Standard `restricted`. A custom image keeps its own user.
CATALOG_IMAGE_UID = 65532
# The launcher's heartbeat: rewritten every few seconds while it lives, so the upload step learns that
# the main container ended even when the launcher never started or was killed before writing its
# exit code.
HEARTBEAT_FILE = f"{TI_DIR}/heartbeat"
# Upload step: seconds without a heartbeat before a launcher that did beat counts as ended (optional),
# and how long a launcher may take to beat at all (the renderer sets the job's scheduling timeout: a
# main container whose image pull fails lets the upload container start first, and such a pod is the
# operator's to fail, at that timeout).
TI_LAUNCHER_GRACE_SECONDS = "TI_LAUNCHER_GRACE_SECONDS"
TI_LAUNCHER_START_SECONDS = "TI_LAUNCHER_START_SECONDS"
