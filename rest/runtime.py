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


def score_config(config: dict, reward_model=None):
    """The run's ``score`` section; a reward model trained earlier in the run (a KFP input) replaces its path."""
    from dataclasses import replace

    from .config import ScoreConfig, section_from_dict

    cfg = section_from_dict(ScoreConfig, config, "score")
    return cfg if reward_model is None else replace(cfg, reward_model_path=reward_model.path)


def pipeline_run() -> str:
    return os.environ.get("REST_PIPELINE_RUN", "") or "local"


class Step:
    """What a component reports about itself: metrics, params, curves, published artifacts."""

    def __init__(self, name: str, g: int = 0, i: int = 0):
        self.name, self.g, self.i = name, g, i
        self.started = time.time()
        self.metrics: dict[str, float] = {}
        self.published: dict[str, dict] = {}
        self.files: list[str] = []
        self.params: dict[str, object] = {}
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self.run_config: dict | None = None   # the resolved run config, logged on the parent run
        self.parent_files: list[str] = []
        self.parent_metrics: dict[str, float] = {}

    @property
    def label(self) -> str:
        if self.g and self.i:
            return f"grow-{self.g}/improve-{self.i}/{self.name}"
        return f"grow-{self.g}/{self.name}" if self.g else self.name

    def metric(self, **values) -> None:
        self.metrics.update({k: float(v) for k, v in values.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def curve(self, name: str, points) -> None:
        """A metric over steps (e.g. the training loss curve)."""
        self.curves[name] = [(int(x), float(y)) for x, y in points]

    def publish(self, local_path: str, name: str, artifact=None, dataset: bool = True) -> dict:
        """Copy an output to the project's MinIO (when configured) and note its URI and digest."""
        from .io import sha256_path

        entry = None
        settings = s3_settings()
        if settings is not None:
            from . import storage

            entry = storage.publish(local_path, pipeline_run(), self.g, self.i, name, settings=settings)
        if entry is None:
            entry = {"uri": None, "sha256": sha256_path(local_path)}
        entry = {**entry, "path": local_path, "dataset": dataset}
        self.published[name] = entry
        if artifact is not None:
            artifact.metadata["sha256"] = entry["sha256"]
            if entry.get("uri"):
                artifact.metadata["s3_uri"] = entry["uri"]
        return entry

    def attach(self, path: str, to_parent: bool = False) -> None:
        """A file (plot, table) to attach to the step's MLflow run (or the pipeline's parent run)."""
        (self.parent_files if to_parent else self.files).append(path)


def s3_settings():
    if not os.environ.get("REST_S3_ENDPOINT") and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        return None
    from . import storage

    return storage.S3Settings.from_env()


@contextlib.contextmanager
def step(name: str, g: int = 0, i: int = 0):
    """Run a component body: logging, timing, and its nested MLflow run when tracking is on."""
    setup_logging()
    s = Step(name, g, i)
    log.info("%s: start (pipeline run %s)", s.label, pipeline_run())
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    with contextlib.ExitStack() as stack:
        run = None
        if uri:
            from . import tracking

            run = stack.enter_context(tracking.step_run(
                uri, os.environ.get("REST_MLFLOW_EXPERIMENT", "rest"), pipeline_run(), s.label,
                tags={"rest.g": g, "rest.i": i}, parent_run_id=os.environ.get("MLFLOW_RUN_ID") or None))
        yield s
        s.metric(wall_s=time.time() - s.started)
        if run is not None:
            _log_to_mlflow(run, s)
    log.info("%s: done in %.1f s", s.label, time.time() - s.started)


def _log_to_mlflow(run, s: Step) -> None:
    import dataclasses

    from . import tracking

    tracking.log_metrics(run, s.metrics)
    if s.params:
        tracking.log_config(run, s.params)
    for name, points in s.curves.items():
        for x, y in points:
            tracking.log_metrics(run, {name: y}, step=x)
    for name, entry in s.published.items():
        if entry.get("dataset"):
            data_file = os.path.join(entry["path"], "data.jsonl")
            tracking.log_dataset(run, data_file if os.path.isfile(data_file) else None, entry.get("uri"),
                                 entry["sha256"], f"{s.label}/{name}", context=s.name)
    for path in s.files:
        tracking.log_artifact(run, path)
    if s.run_config is not None or s.parent_files or s.parent_metrics:
        parent = dataclasses.replace(run, run_id=run.parent_run_id)
        if s.run_config is not None:
            tracking.log_config(parent, s.run_config)
        tracking.log_metrics(parent, s.parent_metrics)
        for path in s.parent_files:
            tracking.log_artifact(parent, path)
