"""kopf entry file: `kopf run operator/handlers.py`. Registration only; the logic lives in `ti`."""

from __future__ import annotations

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    # kopf's own bookkeeping goes to annotations; the schema'd status would be pruned by the API server.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="training.ti.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="training.ti.io")
    settings.posting.level = 20  # INFO and above become Kubernetes Events
