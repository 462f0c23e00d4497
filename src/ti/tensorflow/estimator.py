"""The TensorFlow estimator: the framework version picks a preset image; distributions set TF_CONFIG."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from ti._sdk import arguments
from ti.api import Distribution, TFTrainingJob
from ti.estimator import Estimator, distributions_from

_TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")


class TensorFlow(Estimator):
    """Train a TensorFlow script (TI's script mode) in a preset TensorFlow image or in `image_name`.

    ```python
    tf_estimator = TensorFlow(role=role, train_instance_count=1, train_instance_type='ML.GN8.3XLARGE112',
                              py_version='py3', script_mode=True, framework_version='1.14.0',
                              entry_point='train.py', output_path='cos://bucket-1250000000/path',
                              source_dir='gpu/code')
    tf_estimator.fit('cos://bucket-1250000000/path/to/training/data')
    ```

    `distributions` chooses how several instances train together: None or
    `{'multi_worker_mirrored_strategy': {'enabled': True}}` (every instance a worker), or
    `{'parameter_server': {'enabled': True, 'count': 1}}` (a chief, workers and parameter servers).
    """

    def __init__(
        self,
        role: str,
        train_instance_count: int,
        train_instance_type: str,
        py_version: str = "py3",
        script_mode: bool = True,
        framework_version: str | None = None,
        distributions: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """`kwargs` are the `Estimator`'s: entry_point, source_dir, output_path, hyperparameters, ..."""
        super().__init__(
            role=role,
            train_instance_count=train_instance_count,
            train_instance_type=train_instance_type,
            **kwargs,
        )
        self.py_version = arguments.py_version(py_version)
        self.script_mode = arguments.script_mode(script_mode)
        gpu = self.catalog.instance_type(self.instance_type_name, cluster=False).gpus > 0
        self.framework_version = arguments.framework_version(
            framework_version, self.image_name, self.catalog, gpu
        )
        self._dist = arguments.distributions(distributions, self.train_instance_count)
        self.distributions = distributions_from(self._dist)
        if self.local and self.framework_version:
            _warn_if_local_tensorflow_differs(self.framework_version)

    def training_image(self) -> str:
        if self.image_name:
            return self.image_name
        assert self.framework_version is not None
        gpu = self.catalog.instance_type(self.instance_type_name, cluster=False).gpus > 0
        return self.catalog.framework_image(self.framework_version, gpu=gpu)

    def _distribution(self) -> Distribution:
        return self._dist

    def _framework_version(self) -> str | None:
        return self.framework_version

    @classmethod
    def _init_params_from_job(cls, job: TFTrainingJob) -> dict[str, Any]:
        params = super()._init_params_from_job(job)
        params.update(
            py_version=job.spec.py_version,
            script_mode=True,
            framework_version=job.spec.framework_version,
            distributions=distributions_from(job.spec.distribution),
        )
        return params


def local_tensorflow_version() -> str | None:
    """The installed TensorFlow's version, without importing it (which takes seconds)."""
    for dist in _TENSORFLOW_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _warn_if_local_tensorflow_differs(framework_version: str) -> None:
    local = local_tensorflow_version()
    if local is None:
        warnings.warn(
            f"framework_version={framework_version!r}, but TensorFlow is not installed here; local mode "
            "runs your script with this machine's Python (pip install tensorflow-cpu)",
            UserWarning,
            stacklevel=3,
        )
    elif _major_minor(local) != _major_minor(framework_version):
        warnings.warn(
            f"framework_version={framework_version!r}, but local mode trains with this machine's "
            f"TensorFlow {local}; results may differ from the {framework_version} image",
            UserWarning,
            stacklevel=3,
        )
