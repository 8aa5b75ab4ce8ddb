"""Glue that every KFP component runs around its one core call.

This is the one module that reads the environment (the component's boundary): logging,
the pipeline run's identity, where MLflow and MinIO are. The core stays pure.

Environment:
    REST_PIPELINE_RUN      identity of the pipeline run (run-local sets it; on a cluster the
                           pod's ``pipeline/runid`` label via the downward API). Not a task
                           input, so it does not break KFP's cache.
    MLFLOW_TRACKING_URI    MLflow server or ``sqlite:///...``; unset = no tracking.
    MLFLOW_RUN_ID          an MLflow run created for this pipeline run by someone else (KFP's
                           MLflow integration): the steps nest under it, and its owner ends it.
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


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"
# The step metrics worth a place on a task's one-line summary (``done in ... s; k=v``).
KEY_FIGURES = ("test_bleu", "test_chrf", "test_reward", "reward_hacking", "kept_fraction", "threshold_used",
               "mean_reward_kept", "mean_reward", "best_valid_reward", "optimizer_steps", "tokens_per_s",
               "grown_rows", "candidates_per_s", "kendall_tau", "train_rows", "valid_rows", "test_rows",
               "grow_rows", "overlong_skipped", "bc_steps", "registered", "version")


def setup_logging() -> None:
    """Log INFO and up to stderr as ``time LEVEL logger: message``.

    Inside a KFP task the executor has already put a handler on the root logger (its own
    format, without the logger name); that handler gets this format too, so the lines of
    the project's own loggers (``rest.*``) can be told from library chatter, on a cluster
    and by run-local's console alike.
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, datefmt=LOG_DATEFMT, format=LOG_FORMAT)
    else:
        for h in root.handlers:
            # Only plain console handlers: a test's capture handler keeps its own format.
            if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr):
                h.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    # Library chatter would drown the step's own progress lines.
    for name in ("urllib3", "botocore", "mlflow", "alembic", "httpx", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)


def score_config(config: dict, reward_model=None):
    """The run's ``score`` section; a reward model trained earlier in the run (a KFP input) replaces its path."""
    from dataclasses import replace

    from rest.config import ScoreConfig, section_from_dict

    cfg = section_from_dict(ScoreConfig, config, "score")
    return cfg if reward_model is None else replace(cfg, reward_model_path=reward_model.path)


def reward_spec(config: dict, reward_model=None, **guard):
    """The run's one :class:`rest.rewards.spec.RewardSpec`, from its ``score`` section (a reward model
    trained earlier in the run replaces the path) and the guard settings (on_reward_hacking, hacking_tolerance)."""
    from rest.rewards.spec import RewardSpec

    return RewardSpec.from_config(score_config(config, reward_model), **guard)


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

    def device(self, stats: dict, artifact=None) -> None:
        """A computing step's device figures (``rest.model.device.Meter.record`` in its stats): peak
        memory and throughputs (``*_per_s``) as metrics; device and peak memory on ``artifact``'s metadata."""
        self.metric(**{k: v for k, v in stats.items() if k == "peak_memory_mb" or k.endswith("_per_s")})
        if artifact is not None and "device" in stats:
            artifact.metadata.update({k: stats[k] for k in ("device", "peak_memory_mb", "peak_memory_kind")
                                      if k in stats})

    def curve(self, name: str, points) -> None:
        """A metric over steps (e.g. the training loss curve)."""
        self.curves[name] = [(int(x), float(y)) for x, y in points]

    def publish(self, local_path: str, name: str, artifact=None, dataset: bool = True) -> dict:
        """Copy an output to the project's MinIO (when configured) and note its URI and digest."""
        from rest.services.files import sha256_path

        entry = None
        settings = s3_settings()
        if settings is not None:
            from rest.services import storage

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


def resume_uri() -> str | None:
    """Where this run's steps keep resumable state (checkpoints, Grow chunks) in the project's
    object store: ``s3://<bucket>/<prefix>/<run>/resume``; None when no store is configured.

    Keyed by the pipeline run, so a retried task (a preempted pod, same run) resumes on a
    fresh disk, and a new run starts clean.
    """
    settings = s3_settings()
    if settings is None:
        return None
    from rest.services import storage

    return storage.resume_uri(pipeline_run(), settings)


def s3_settings():
    if not os.environ.get("REST_S3_ENDPOINT") and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        return None
    from rest.services import storage

    return storage.S3Settings.from_env(os.environ)


@contextlib.contextmanager
def step(name: str, g: int = 0, i: int = 0):
    """Run a component body: logging, timing, and its nested MLflow run when tracking is on."""
    from rest_kfp.steps import STEP_TABLE

    if name not in STEP_TABLE:
        raise ValueError(f"step {name!r} is not in the step table (rest_kfp/steps.py): {', '.join(STEP_TABLE)}")
    setup_logging()
    from rest.services import storage

    storage.configure(s3_settings())  # the core reads no environment: this boundary does
    s = Step(name, g, i)
    log.info("%s: start (pipeline run %s)", s.label, pipeline_run())
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    with contextlib.ExitStack() as stack:
        run = None
        if uri:
            from rest.services import tracking

            run = stack.enter_context(tracking.step_run(
                uri, os.environ.get("REST_MLFLOW_EXPERIMENT", "rest"), pipeline_run(), s.label,
                tags={"rest.g": g, "rest.i": i}, parent_run_id=os.environ.get("MLFLOW_RUN_ID") or None))
        yield s
        s.metric(wall_s=time.time() - s.started)
        if run is not None:
            _log_to_mlflow(run, s)
    figures = " ".join(f"{k}={s.metrics[k]:.4g}" for k in KEY_FIGURES if k in s.metrics)
    log.info("%s: done in %.1f s%s", s.label, time.time() - s.started, f"; {figures}" if figures else "")


# KFP's final task states (dsl.PipelineTaskFinalStatus.state) as MLflow run statuses.
_FINAL_STATUS = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "CANCELLED": "KILLED", "CANCELED": "KILLED"}


def finish_pipeline(state: str, error_message: str | None = None) -> str | None:
    """End this pipeline run's MLflow parent run with the pipeline's final ``state``.

    The pipeline's exit task calls this after every other task. ``SUCCEEDED`` ends the
    parent run FINISHED, ``FAILED`` FAILED, ``CANCELLED`` KILLED (any other state: FAILED);
    the error message, if any, becomes the tag ``rest.error``. Returns the status set, or
    None when there is nothing to end: tracking is off, or the parent is a run handed in
    as ``MLFLOW_RUN_ID`` (KFP's MLflow integration creates that run and ends it itself).
    """
    setup_logging()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    t0 = time.time()
    log.info("finish: start (pipeline run %s, state %s)", pipeline_run(), state)
    status = None
    given = os.environ.get("MLFLOW_RUN_ID") or ""
    if not uri:
        log.info("finish: tracking is off; nothing to end")
    elif given:
        log.info("finish: MLflow run %s was handed in (MLFLOW_RUN_ID); its owner ends it", given)
    else:
        from rest.services import tracking

        status = _FINAL_STATUS.get((state or "").upper(), "FAILED")
        run_id = tracking.pipeline_parent_run(uri, os.environ.get("REST_MLFLOW_EXPERIMENT", "rest"), pipeline_run())
        tracking.finish_pipeline_run(uri, run_id, status, error_message if status != "FINISHED" else None)
        log.info("finish: MLflow parent run %s ended %s", run_id, status)
    log.info("finish: done in %.1f s", time.time() - t0)
    return status


def _log_to_mlflow(run, s: Step) -> None:
    import dataclasses

    from rest.services import tracking

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
