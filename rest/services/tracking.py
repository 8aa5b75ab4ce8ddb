"""MLflow tracking: one parent run per pipeline run, one nested run per step, and plots.

Every function takes the tracking URI (or a :class:`StepRun`) explicitly; only
:func:`tracking_uri_from_env` reads the environment, for the component wrappers. All
calls go through an ``MlflowClient`` bound to that URI, never the process-global fluent
state, so two stores can be used side by side and nothing leaks between steps.

Without a server, ``sqlite:///<dir>/mlflow.db`` (see :func:`embedded_uri`) is a complete
embedded store; its artifacts go to ``<dir>/artifacts``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

PIPELINE_TAG = "rest.pipeline_run"
ROLE_TAG = "rest.role"
PARENT_TAG = "mlflow.parentRunId"
# Config keys whose values must never reach MLflow params (they are world-readable there).
# Whole words only: ``batch_tokens`` is a setting, ``aws_secret_access_key`` is not.
_SECRET_KEY = re.compile(r"(^|_)(secret|password|passwd|token|credentials?|access_key|api_key)(_|$)", re.I)


@dataclass
class StepRun:
    """An open nested run for one pipeline step (what :func:`step_run` yields)."""

    client: Any           # mlflow.MlflowClient bound to tracking_uri
    tracking_uri: str
    run_id: str
    parent_run_id: str
    experiment_id: str
    step_name: str

    @property
    def info(self):
        return self.client.get_run(self.run_id).info


def embedded_uri(directory: str) -> str:
    """A server-less tracking URI: an sqlite file in ``directory``."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    return f"sqlite:///{directory}/mlflow.db"


def tracking_uri_from_env(environ: Mapping[str, str], default_dir: str | None = None) -> str:
    """MLFLOW_TRACKING_URI, else an embedded store in ``default_dir`` (or ./mlflow)."""
    uri = (environ.get("MLFLOW_TRACKING_URI") or "").strip()
    return uri or embedded_uri(default_dir or os.path.join(os.getcwd(), "mlflow"))


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def get_or_create_experiment(client, tracking_uri: str, name: str) -> str:
    """Experiment id for ``name``; an embedded store keeps artifacts beside its database."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or choose another name")
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        # Without this an embedded store would write artifacts under the current directory.
        db_dir = os.path.dirname(tracking_uri[len("sqlite:///"):])
        location = "file://" + os.path.join(os.path.abspath(db_dir), "artifacts")
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # A parallel step created it first.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _find_parents(client, experiment_id: str, pipeline_run: str) -> list:
    # Quotes in the run name would break the filter string; KFP run ids never contain them.
    value = pipeline_run.replace("'", "")
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{PIPELINE_TAG}` = '{value}' and tags.`{ROLE_TAG}` = 'pipeline'"), max_results=50)
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def pipeline_parent_run(tracking_uri: str, experiment: str, pipeline_run: str,
                        parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
    """Find or create the parent run of ``pipeline_run``; returns its run id.

    With ``parent_run_id`` (e.g. an MLFLOW_RUN_ID handed to the pipeline) that run is the
    parent. Parallel steps may both create a parent; each then re-reads and adopts the
    oldest, deleting its own extra, so all steps end up under one parent.
    """
    client = _client(tracking_uri)
    if parent_run_id:
        client.set_tag(parent_run_id, PIPELINE_TAG, pipeline_run)
        return parent_run_id
    exp_id = get_or_create_experiment(client, tracking_uri, experiment)
    found = _find_parents(client, exp_id, pipeline_run)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=pipeline_run, tags={
        PIPELINE_TAG: pipeline_run, ROLE_TAG: "pipeline", **{k: str(v) for k, v in (tags or {}).items()}})
    found = _find_parents(client, exp_id, pipeline_run)
    winner = found[0].info.run_id if found else run.info.run_id
    if winner != run.info.run_id:
        client.delete_run(run.info.run_id)
    return winner


@contextlib.contextmanager
def step_run(tracking_uri: str, experiment: str, pipeline_run: str, step_name: str,
             tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None) -> Iterator[StepRun]:
    """Open a nested run for one step under the pipeline run's parent; close it on exit.

    The run ends FINISHED, or FAILED when the block raises (the error propagates).
    """
    client = _client(tracking_uri)
    parent = pipeline_parent_run(tracking_uri, experiment, pipeline_run, parent_run_id)
    exp_id = client.get_run(parent).info.experiment_id
    run = client.create_run(exp_id, run_name=step_name, tags={
        PARENT_TAG: parent, PIPELINE_TAG: pipeline_run, ROLE_TAG: "step", "rest.step": step_name,
        **{k: str(v) for k, v in (tags or {}).items()}})
    sr = StepRun(client=client, tracking_uri=tracking_uri, run_id=run.info.run_id, parent_run_id=parent,
                 experiment_id=exp_id, step_name=step_name)
    status = "FAILED"
    try:
        yield sr
        status = "FINISHED"
    finally:
        client.set_terminated(sr.run_id, status=status)


def finish_pipeline_run(tracking_uri: str, run_id: str, status: str = "FINISHED", message: str | None = None) -> None:
    """Mark a pipeline's parent run ended: FINISHED, FAILED or KILLED (the pipeline's exit task calls this).

    ``message`` (why it failed) is kept as the tag ``rest.error``.
    """
    client = _client(tracking_uri)
    if message:
        client.set_tag(run_id, "rest.error", str(message)[:5000])  # MLflow's tag value limit
    client.set_terminated(run_id, status=status)


# -- params, metrics, datasets, tables, artifacts ----------------------------------------------

def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"sample": {"temperature": 0.8}}`` → ``{"sample.temperature": "0.8"}`` (secrets dropped)."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if _SECRET_KEY.search(str(k)):
            continue
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = "" if v is None else str(v)
    return out


def log_config(run: StepRun, config: Mapping[str, Any]) -> dict[str, str]:
    """Log a (nested) config dict as params named ``section.field``; returns what was logged."""
    from mlflow.entities import Param

    params = {k: v[:6000] for k, v in flatten(config).items()}  # MLflow's value length limit
    items = [Param(k, v) for k, v in sorted(params.items())]
    for k in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        run.client.log_batch(run.run_id, params=items[k:k + 100])
    return params


def log_metrics(run: StepRun, metrics: Mapping[str, Any], step: int | None = None) -> dict[str, float]:
    """Log numeric metrics (non-numbers and None are skipped); returns what was logged."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    logged = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        logged[k] = float(v)
    if logged:
        run.client.log_batch(run.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in logged.items()])
    return logged


def log_dataset(run: StepRun, path: str | None, uri: str | None, digest: str, name: str,
                context: str = "training") -> None:
    """Record a data set as an MLflow dataset input of ``run``.

    The source is the object-store URI when there is one (else the local path); the
    digest is the content SHA-256 (MLflow's column is short, so the full value is also
    kept as an input tag). A local JSONL file gets its schema and row count recorded.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    source_uri = uri or (os.path.abspath(path) if path else name)
    source = _dataset_source(source_uri)
    short = digest[:32] if digest else None
    dataset = None
    if path and os.path.isfile(path) and path.endswith(".jsonl"):
        try:
            import pandas as pd
            from mlflow.data.pandas_dataset import from_pandas

            dataset = from_pandas(pd.read_json(path, lines=True), source=source, name=name, digest=short)
        except (ValueError, ImportError) as e:
            log.warning("dataset %s: no schema recorded (%s)", name, e)
    if dataset is None:
        dataset = MetaDataset(source=source, name=name, digest=short)
    tags = [InputTag(key="mlflow.data.context", value=context)]
    if digest:
        tags.append(InputTag(key="rest.sha256", value=digest))
    run.client.log_inputs(run.run_id, datasets=[DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)])


def _dataset_source(uri: str):
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    try:
        return resolve_dataset_source(uri)
    except Exception:  # noqa: BLE001 - any unresolvable URI is still worth recording
        return HTTPDatasetSource(url=uri)


def log_artifact(run: StepRun, path: str, artifact_path: str | None = None) -> None:
    """Upload a local file or directory to the run's artifacts."""
    if os.path.isdir(path):
        run.client.log_artifacts(run.run_id, path, artifact_path)
    else:
        run.client.log_artifact(run.run_id, path, artifact_path)


def select_samples(rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = (), per_group: int = 5,
                   reward_key: str = "reward") -> list[dict]:
    """Best, worst and per-threshold borderline candidates, each tagged with its group."""
    scored = [dict(r) for r in rows if isinstance(r.get(reward_key), (int, float))]
    by_reward = sorted(scored, key=lambda r: r[reward_key])
    picked: list[dict] = []
    picked += [{"group": "best", **r} for r in reversed(by_reward[-per_group:])]
    picked += [{"group": "worst", **r} for r in by_reward[:per_group]]
    for t in thresholds:
        near = sorted(scored, key=lambda r: abs(r[reward_key] - t))[:per_group]
        picked += [{"group": f"borderline@{t:g}", **r} for r in sorted(near, key=lambda r: r[reward_key])]
    return picked


def log_sample_table(run: StepRun, rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = (),
                     per_group: int = 5, artifact_file: str = "samples.json") -> list[dict]:
    """Log best / worst / borderline candidates as an MLflow table (``mlflow.log_table``)."""
    picked = select_samples(rows, thresholds, per_group)
    if not picked:
        return []
    columns = list(dict.fromkeys(k for r in picked for k in r))
    data = {c: [_cell(r.get(c)) for r in picked] for c in columns}
    run.client.log_table(run.run_id, data=data, artifact_file=artifact_file)
    return picked


def _cell(v):
    return v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, ensure_ascii=False)


# -- plots (also embedded in KFP HTML/Markdown outputs) -----------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display in a pipeline container
    import matplotlib.pyplot as plt

    return plt


def threshold_marks(values: Sequence[float], thresholds: Sequence[float],
                    configured: Sequence[float] | None = None, kept_label: str = "kept") -> list[dict]:
    """The threshold lines of :func:`reward_histogram`: each used τ, its configured value, the share at or above it.

    ``thresholds`` are the ones the filter used (after the guard); ``configured`` the schedule
    as written, shown beside each used value that differs from it.
    """
    marks = []
    for k, t in enumerate(thresholds):
        share = sum(v >= t for v in values) / max(1, len(values))
        conf = configured[k] if configured is not None and k < len(configured) else None
        label = f" τ{k + 1} = {t:.3g}"
        if conf is not None and abs(conf - t) > 1e-9:
            label += f" (configured {conf:g})"
        marks.append({"tau": float(t), "configured": conf, "share": share,
                      "label": label + f": {share:.0%} {kept_label}"})
    return marks


def reward_histogram_figure(rewards: Iterable[float], thresholds: Sequence[float],
                            title: str = "Reward of grown candidates", configured: Sequence[float] | None = None,
                            kept_label: str = "kept"):
    """The figure of :func:`reward_histogram` (the caller closes it); ``fig.threshold_marks`` lists what was drawn."""
    plt = _pyplot()
    values = [float(r) for r in rewards if r is not None and not math.isnan(float(r))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.hist(values, bins=40, range=(0.0, 1.0) if all(0 <= v <= 1 for v in values) else None,
            color="#4c72b0", alpha=0.85)
    marks = threshold_marks(values, thresholds, configured, kept_label)
    for k, m in enumerate(marks):
        ax.axvline(m["tau"], color="#c44e52", linestyle="--", linewidth=1.2)
        ax.text(m["tau"], ax.get_ylim()[1] * (0.95 - 0.07 * k), m["label"], color="#c44e52", fontsize=8, va="top")
    if values:
        mean = sum(values) / len(values)
        ax.axvline(mean, color="black", linewidth=1)
        ax.text(mean, ax.get_ylim()[1] * 0.5, f" mean {mean:.3f}", fontsize=8)
    ax.set_xlabel("reward")
    ax.set_ylabel("candidates")
    ax.set_title(f"{title} (n={len(values)})")
    fig.threshold_marks = marks
    return fig


def reward_histogram(rewards: Iterable[float], thresholds: Sequence[float], path: str,
                     title: str = "Reward of grown candidates", configured: Sequence[float] | None = None,
                     kept_label: str = "kept") -> str:
    """Histogram of rewards with each filter threshold as a labelled vertical line; writes a PNG.

    Draw the thresholds the filter actually used; pass the configured schedule as
    ``configured`` to have it written beside each one the guard moved.
    """
    plt = _pyplot()
    fig = reward_histogram_figure(rewards, thresholds, title, configured, kept_label)
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def curves_plot(steps_rows: Sequence[Mapping[str, Any]], path: str,
                metrics: Sequence[str] = ("reward", "chrf", "bleu"),
                control: Mapping[str, Any] | None = None) -> str:
    """Test metrics across (g, i) steps, one panel per metric; the control as a horizontal line.

    Rows hold ``g``, ``i`` and the metrics (as ``reward`` or ``test_reward`` etc.). A row
    with ``kind == "control"`` (or ``control=True``), or the ``control`` argument, is the
    references-only control and is drawn as a dashed horizontal line.
    """
    plt = _pyplot()

    def value(row, m):
        for k in (m, f"test_{m}"):
            if isinstance(row.get(k), (int, float)):
                return float(row[k])
        return None

    rows = [r for r in steps_rows if not (r.get("kind") == "control" or r.get("control") is True)]
    controls = [r for r in steps_rows if r not in rows] + ([dict(control)] if control else [])
    rows = sorted(rows, key=lambda r: (int(r.get("g", 0)), int(r.get("i", 0))))
    labels = [r.get("label") or ("BC" if int(r.get("g", 0)) == 0 else f"G{r.get('g')} I{r.get('i')}")
              for r in rows]
    shown = [m for m in metrics if any(value(r, m) is not None for r in rows + controls)]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4.2 * max(1, len(shown)), 3.6), dpi=100,
                             squeeze=False)
    try:
        for ax, m in zip(axes[0], shown):
            xs = [k for k, r in enumerate(rows) if value(r, m) is not None]
            ax.plot(xs, [value(rows[k], m) for k in xs], marker="o", color="#4c72b0", label="ReST")
            for c in controls:
                v = value(c, m)
                if v is not None:
                    ax.axhline(v, color="#dd8452", linestyle="--", label=c.get("label", "control"))
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"test {m}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if not shown:
            axes[0][0].text(0.5, 0.5, "no metrics yet", ha="center", va="center")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def _save(fig, path: str) -> None:
    from rest.services.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
