"""Glue that every KFP component runs around its one core call.

This is the one module that reads the environment (the component's boundary): logging,
the pipeline run's identity, where MLflow and MinIO are. The core stays pure.

Environment:
    REST_PIPELINE_RUN      identity of the pipeline run (run-local sets it; on a cluster the
                           pod's ``pipeline/runid`` label via the downward API). Not a task
                           input, so it does not break KFP's cache.
    MLFLOW_TRACKING_URI    MLflow server or ``sqlite:///...``; unset = no tracking.
    REST_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, REST_S3_BUCKET
                           the project's MinIO; unset = artifacts stay in KFP's own store.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

log = logging.getLogger("rest.step")


def setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, datefmt="%H:%M:%S",
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Library chatter would drown the step's own progress lines.
    for name in ("urllib3", "botocore", "mlflow", "alembic", "httpx", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)


def pipeline_run() -> str:
    return os.environ.get("REST_PIPELINE_RUN", "") or "local"


class Step:
    """What a component reports about itself: metrics, params, published artifacts."""

    def __init__(self, name: str, g: int = 0, i: int = 0):
        self.name, self.g, self.i = name, g, i
        self.started = time.time()
        self.metrics: dict[str, float] = {}
        self.published: dict[str, dict] = {}
        self.files: list[str] = []
        self.params: dict[str, object] = {}
        self.datasets: list[dict] = []

    @property
    def label(self) -> str:
        return f"grow-{self.g}/improve-{self.i}/{self.name}" if self.g else self.name

    def metric(self, **values) -> None:
        self.metrics.update({k: float(v) for k, v in values.items() if isinstance(v, (int, float))})

    def publish(self, local_path: str, name: str, artifact=None) -> dict | None:
        """Copy an output to the project's MinIO (when configured) and note its URI and digest."""
        from .io import sha256_path

        entry = None
        try:
            from . import storage
        except ImportError:  # storage extras not installed: KFP's own artifact store only
            storage = None
        if storage is not None:
            settings = storage.S3Settings.from_env()
            if settings is not None:
                entry = storage.publish(local_path, pipeline_run(), self.g, self.i, name, settings=settings)
        if entry is None:
            entry = {"uri": None, "sha256": sha256_path(local_path)}
        self.published[name] = entry
        if artifact is not None:
            artifact.metadata["sha256"] = entry["sha256"]
            if entry.get("uri"):
                artifact.metadata["s3_uri"] = entry["uri"]
        return entry

    def attach(self, path: str) -> None:
        """A file (plot, table) to attach to the step's MLflow run."""
        self.files.append(path)


@contextlib.contextmanager
def step(name: str, g: int = 0, i: int = 0, config: dict | None = None):
    """Run a component body: logging, timing, and the MLflow nested run when tracking is on."""
    setup_logging()
    s = Step(name, g, i)
    if config:
        s.params.update(config)
    log.info("%s: start (pipeline run %s)", s.label, pipeline_run())
    yield s
    s.metric(wall_s=time.time() - s.started)
    _track(s)
    log.info("%s: done in %.1f s", s.label, time.time() - s.started)


def _track(s: Step) -> None:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return
    from . import tracking

    tracking.log_step(uri, os.environ.get("REST_MLFLOW_EXPERIMENT", "rest"), pipeline_run(), s,
                      parent_run_id=os.environ.get("MLFLOW_RUN_ID") or None)
