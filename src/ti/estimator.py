"""Estimator: the TI SDK's training entry point, submitted as a TFTrainingJob.

Configuration lives on the estimator and is checked when it is built; all I/O goes through its
`Session`. `fit` packs and uploads the source, creates the job, and with `wait` follows it to the end.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ti import contract
from ti._sdk import arguments, locations, naming, sourcedir
from ti.api import Distribution, DistributionType, ObjectMeta, TFTrainingJob, TFTrainingJobSpec
from ti.catalog import CATALOG_FILE_ENV, Catalog, load_catalog
from ti.job import TrainingJob, TrainingJobHandle
from ti.session import Session

ANNOTATION_BASE_JOB_NAME = f"{contract.GROUP}/base-job-name"


class Estimator:
    """Train `entry_point` from `source_dir` on `train_instance_count` instances of `train_instance_type`.

    `train_instance_type='local'` (or `'local_gpu'`) trains on this machine, as processes, with no
    cluster. `image_name` is the training image; subclasses such as `ti.tensorflow.TensorFlow` pick it
    from a framework version instead.
    """

    def __init__(
        self,
        role: str,
        train_instance_count: int,
        train_instance_type: str,
        entry_point: str | None = None,
        source_dir: str | None = None,
        output_path: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        image_name: str | None = None,
        base_job_name: str | None = None,
        train_max_run: int = 24 * 60 * 60,
        train_volume_size: int = 30,
        checkpoint_path: str | None = None,
        metric_definitions: list[Mapping[str, str]] | None = None,
        session: Session | None = None,
        queue_name: str | None = None,
    ) -> None:
        self.session = session if session is not None else Session()
        self.catalog: Catalog = load_catalog(os.environ.get(CATALOG_FILE_ENV))
        self.role = arguments.role(role)
        self.train_instance_count = arguments.instance_count(train_instance_count)
        instance = arguments.instance_type(train_instance_type, self.catalog)
        self.train_instance_type = train_instance_type
        self.instance_type_name = instance.name
        self.local = instance.local
        self.image_name = arguments.image_name(image_name)
        self.entry_point, self.source_dir = locations.source(entry_point, source_dir)
        self.output_path = locations.location("output_path", output_path, local=self.local)
        self.checkpoint_path = locations.location(
            "checkpoint_path", checkpoint_path, local=self.local, required=False
        )
        self.hyperparameters = arguments.hyperparameters(hyperparameters)
        self.base_job_name = arguments.base_job_name(base_job_name)
        self.train_max_run = arguments.train_max_run(train_max_run)
        self.train_volume_size = arguments.train_volume_size(train_volume_size)
        self._metrics = arguments.metric_definitions(metric_definitions)
        self.metric_definitions = [{"Name": m.name, "Regex": m.regex} for m in self._metrics]
        self.queue_name = arguments.queue_name(queue_name)
        self.latest_training_job: TrainingJobHandle | None = None

    # ---- what subclasses decide -------------------------------------------------------------------

    def training_image(self) -> str:
        """The image the job trains in."""
        if self.image_name is None:
            raise arguments.ArgumentError("image_name", "no training image", "Pass image_name=")
        return self.image_name

    def _distribution(self) -> Distribution:
        return Distribution()

    def _framework_version(self) -> str | None:
        return None

    # ---- the job ----------------------------------------------------------------------------------

    @classmethod
    def argument_names(cls) -> tuple[str, ...]:
        """The constructor's arguments (but `session`), from the signatures along the class's MRO:
        a subclass names its own and passes the rest on with **kwargs."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for param in inspect.signature(init).parameters.values():
                if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                    continue
                if param.name not in ("self", "session") and param.name not in names:
                    names.append(param.name)
        return tuple(names)

    def arguments(self) -> dict[str, Any]:
        """The estimator's arguments, as `attach` rebuilds them from a live job."""
        return {name: getattr(self, name) for name in self.argument_names()}

    def _job_name(self, job_name: str | None) -> str:
        checked = arguments.job_name(job_name)
        if checked:
            return checked
        base = self.base_job_name or naming.base_name_from_image(self.training_image())
        return naming.default_job_name(base)

    def _job(self, name: str, channels: dict[str, str], source_uri: str | None) -> TFTrainingJob:
        spec = TFTrainingJobSpec(
            role=self.role,
            instance_type=self.instance_type_name,
            instance_count=self.train_instance_count,
            framework_version=self._framework_version(),
            image=self.image_name,
            entry_point=self.entry_point,
            source_dir=source_uri,
            hyperparameters=self.hyperparameters,
            inputs=channels,
            output_path=self.output_path,
            checkpoint_path=self.checkpoint_path,
            distribution=self._distribution(),
            volume_size_gb=self.train_volume_size,
            max_run_seconds=self.train_max_run,
            metric_definitions=self._metrics,
        )
        annotations = {ANNOTATION_BASE_JOB_NAME: self.base_job_name} if self.base_job_name else {}
        namespace = None if self.local else self.session.namespace
        # Ours, not the TI SDK's: Kueue admits the job from this LocalQueue (ignored in local mode).
        labels = {contract.KUEUE_QUEUE_LABEL: self.queue_name} if self.queue_name and not self.local else {}
        meta = ObjectMeta(name=name, namespace=namespace, annotations=annotations, labels=labels)
        return TFTrainingJob(metadata=meta, spec=spec)

    def fit(
        self,
        inputs: str | Mapping[str, str] | None = None,
        wait: bool = True,
        logs: bool = True,
        run_tensorboard_locally: bool = False,
        job_name: str | None = None,
    ) -> None:
        """Start a training job on `inputs`: a COS URI (the channel `training`) or a dict of channel
        name to URI. With `wait`, follow it to the end (printing the logs with `logs`) and raise
        `TrainingJobFailed` if it fails; without, return at once (see `latest_training_job`)."""
        channels = locations.inputs(inputs, local=self.local)
        name = self._job_name(job_name)
        self.training_image()  # an estimator without an image fails here, before any upload
        source_uri = self._upload_source(name)
        job = self._job(name, channels, source_uri)
        handle: TrainingJobHandle
        if self.local:
            from ti.local.job import LocalTrainingJob

            handle = LocalTrainingJob.start(job, self.catalog, self.session)
        else:
            self.session.create_job(job.to_body())
            handle = TrainingJob(name, self.session)
            print(f"Training job {name} created in namespace {self.session.namespace}", flush=True)
        self.latest_training_job = handle
        if wait:
            handle.wait(logs=logs, tensorboard=run_tensorboard_locally)
        elif run_tensorboard_locally:
            handle.tensorboard()

    def _upload_source(self, name: str) -> str | None:
        if self.source_dir is None:
            return None
        if "://" in self.source_dir and not self.source_dir.startswith("file://"):
            return self.source_dir  # an uploaded sourcedir.tar.gz
        assert self.output_path is not None
        uri = contract.source_uri(self.output_path, name)
        from ti._sdk.progress import transfer_bar

        with tempfile.TemporaryDirectory(prefix="ti-source-") as tmp:
            archive = sourcedir.pack(
                Path(self.source_dir.removeprefix("file://")), Path(tmp) / sourcedir.ARCHIVE_NAME
            )
            with transfer_bar(f"Uploading source to {uri}", archive.stat().st_size) as progress:
                self.session.upload_file(archive, uri, progress=progress)
        return uri

    @property
    def model_data(self) -> str:
        """URI of the latest job's model.tar.gz."""
        if self.latest_training_job is None:
            raise RuntimeError("no training job yet: call fit() first, or attach to a job")
        return str(self.latest_training_job.model_data)

    # ---- attach ---------------------------------------------------------------------------------------

    @classmethod
    def attach(
        cls, training_job_name: str, session: Session | None = None, wait: bool = True, logs: bool = True
    ) -> Estimator:
        """Rebuild the estimator of an existing job from the live object, through the constructor, and,
        with `wait`, resume waiting and streaming its logs (from another process or notebook)."""
        session = session if session is not None else Session()
        job = TFTrainingJob.from_body(session.get_job(training_job_name))
        estimator = cls(**cls._init_params_from_job(job), session=session)
        handle = TrainingJob(training_job_name, session)
        estimator.latest_training_job = handle
        if wait:
            handle.wait(logs=logs)
        return estimator

    @classmethod
    def _init_params_from_job(cls, job: TFTrainingJob) -> dict[str, Any]:
        """The constructor arguments that build the estimator `job` was made by (SageMaker's rule)."""
        spec = job.spec
        if spec.source_dir is None:
            raise arguments.ArgumentError(
                "training_job_name",
                f"job {job.name} has no spec.sourceDir, so no estimator can be rebuilt from it",
                f"Follow it with ti.job.TrainingJob({job.name!r}) instead",
            )
        return {
            "role": spec.role,
            "train_instance_count": spec.instance_count,
            "train_instance_type": spec.instance_type,
            "entry_point": spec.entry_point,
            "source_dir": spec.source_dir,
            "output_path": spec.output_path,
            "hyperparameters": dict(spec.hyperparameters),
            "image_name": spec.image,
            "base_job_name": job.metadata.annotations.get(ANNOTATION_BASE_JOB_NAME),
            "train_max_run": spec.max_run_seconds,
            "train_volume_size": spec.volume_size_gb,
            "checkpoint_path": spec.checkpoint_path,
            "metric_definitions": [{"Name": m.name, "Regex": m.regex} for m in spec.metric_definitions],
            "queue_name": job.metadata.labels.get(contract.KUEUE_QUEUE_LABEL),
        }


def distributions_from(distribution: Distribution) -> dict[str, Any] | None:
    """The TI/SageMaker-style `distributions` argument that gives `distribution`."""
    if distribution.type == DistributionType.PARAMETER_SERVER:
        return {"parameter_server": {"enabled": True, "count": distribution.ps_count}}
    return None
