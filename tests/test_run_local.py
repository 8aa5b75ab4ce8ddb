"""`python pipeline.py run-local` as a user types it: its console, its log file, and how it leaves MLflow.

One tiny successful run (the only full pipeline run here) and two runs that fail at their
first task, all against a real `mlflow server`: the pipeline's parent run ends FINISHED or
FAILED through the exit task, and a run handed in as MLFLOW_RUN_ID is left to its owner.
"""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.servers import mlflow_server, s3_server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]
EXPERIMENT = "rest-run-local"
TASK_LINE = re.compile(r"^\d\d:\d\d:\d\d  (?P<what>start|ok|FAILED)\s+(?P<label>[^\s:]+)(?P<rest>.*)$")
# The tasks of a run with one Improve step, no control and no registration.
TASKS = {"validate", "prepare", "bootstrap", "evaluate", "grow-1/sample", "grow-1/score", "grow-1/improve-1/filter",
         "grow-1/improve-1/finetune", "grow-1/improve-1/evaluate", "summarize", "finish"}


def tiny(tiny_data, tiny_policy, out, test=None):
    return ["run-local", "--output-dir", str(out), "--train", tiny_data["train"], "--valid", tiny_data["valid"],
            "--test", test or tiny_data["test"], "--policy", tiny_policy, "--data.grow_sources", "12",
            "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5", "--filter.thresholds", "0.05",
            "--filter.keep_references", "true", "--finetune.epochs", "1", "--loop.control", "false", "--loop.register", "false"]


def run_cli(args, env):
    return subprocess.run([sys.executable, "pipeline.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture
def env(mlflow_server):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("REST_", "MLFLOW_", "AWS_"))}  # no MinIO, no leftovers of other tests
    e.update(MLFLOW_TRACKING_URI=mlflow_server.url, REST_MLFLOW_EXPERIMENT=EXPERIMENT, OMP_NUM_THREADS="1")
    return e


def runs_of(url, pipeline_run):
    from mlflow import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`rest.pipeline_run` = '{pipeline_run}'")


def pipeline_run_id(stdout):
    return re.search(r"pipeline run (local-\S+?);", stdout).group(1)


@pytest.fixture
def broken_test_split(tmp_path):
    """A test file whose header lacks the target column: the validate task fails within seconds."""
    path = tmp_path / "broken.tsv"
    path.write_text("id\tde\nx1\tHallo\n", encoding="utf-8")
    return str(path)


def test_console_shows_one_line_per_task_and_the_log_has_everything(env, mlflow_server, tiny_data, tiny_policy,
                                                                    tmp_path):
    out = tmp_path / "run"
    res = run_cli(tiny(tiny_data, tiny_policy, out), env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stdout = res.stdout
    log_path = out / "run-local.log"
    assert f"the full log in {log_path}" in stdout.splitlines()[0]

    # No executor input on the console: that is ~130 lines of JSON per task.
    assert "executor_input" not in stdout and '"outputFile"' not in stdout and "executorInput" not in stdout
    lines = [TASK_LINE.match(line) for line in stdout.splitlines()]
    starts = [m["label"] for m in lines if m and m["what"] == "start"]
    oks = {m["label"]: m["rest"] for m in lines if m and m["what"] == "ok"}
    assert sorted(starts) == sorted(TASKS) and set(oks) == TASKS  # each task once, and it finished
    assert not [m for m in lines if m and m["what"] == "FAILED"]
    assert re.search(r"^: done in \d+\.\d s; .*kept_fraction=", oks["grow-1/improve-1/filter"])  # wall, figures
    assert "test_chrf=" in oks["grow-1/improve-1/evaluate"] and "optimizer_steps=" in oks["grow-1/improve-1/finetune"]
    assert re.search(r"candidates/s", stdout)  # the progress lines with rates stay
    assert len(stdout.splitlines()) < 120, stdout  # condensed, not the ~2,000-line raw stream

    # The log file has the whole raw stream: every task's executor input and output.
    log = log_path.read_text(encoding="utf-8")
    assert log.count("Got executor_input") == len(TASKS)
    assert "grow-1/improve-1/finetune: start" in log and "Wrote executor output file" in log
    assert len(log.splitlines()) > 5 * len(stdout.splitlines())

    # MLflow: the parent run ended FINISHED (the exit task), every step run too.
    runs = runs_of(mlflow_server.url, pipeline_run_id(stdout))
    parents = [r for r in runs if r.data.tags.get("rest.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and parents[0].info.end_time
    steps = [r for r in runs if r.data.tags.get("rest.role") == "step"]
    assert len(steps) == len(TASKS) - 1 and all(r.info.status == "FINISHED" for r in steps)


def test_failed_task_ends_the_parent_run_failed(env, mlflow_server, tiny_data, tiny_policy, tmp_path,
                                                broken_test_split):
    out = tmp_path / "failed"
    res = run_cli(tiny(tiny_data, tiny_policy, out, test=broken_test_split) + ["--verbose"], env)
    assert res.returncode == 1
    assert "error: validate failed" in res.stderr and str(out / "run-local.log") in res.stderr
    assert "Traceback" not in res.stderr  # a message, not our own traceback
    assert "Got executor_input" in res.stdout  # --verbose: the raw stream on the console
    runs = runs_of(mlflow_server.url, pipeline_run_id(res.stdout))
    (parent,) = [r for r in runs if r.data.tags.get("rest.role") == "pipeline"]
    assert parent.info.status == "FAILED" and parent.info.end_time
    assert "failed" in parent.data.tags["rest.error"]
    (validate,) = [r for r in runs if r.data.tags.get("rest.role") == "step"]
    assert validate.data.tags["rest.step"] == "validate" and validate.info.status == "FAILED"


def test_handed_in_run_is_left_to_its_owner_and_a_failure_shows_why(env, mlflow_server, tiny_data, tiny_policy, tmp_path,
                                                  broken_test_split):
    """MLFLOW_RUN_ID: the steps nest under it and nothing ends it; the console shows the failed task and why."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    from rest.services.tracking import get_or_create_experiment

    exp_id = get_or_create_experiment(client, mlflow_server.url, EXPERIMENT)
    owned = client.create_run(exp_id, run_name="made by KFP's MLflow integration").info.run_id
    res = run_cli(tiny(tiny_data, tiny_policy, tmp_path / "owned", test=broken_test_split),
                  {**env, "MLFLOW_RUN_ID": owned})
    assert res.returncode == 1
    failed = [line for line in res.stdout.splitlines() if TASK_LINE.match(line) and " FAILED " in line]
    assert len(failed) == 1 and "validate" in failed[0]
    assert "has no column 'en'" in res.stdout  # the validate error itself
    assert "executor_input" not in res.stdout
    # The handed-in run is the parent of the steps and stays as its owner left it.
    run = client.get_run(owned)
    assert run.info.status == "RUNNING" and not run.info.end_time
    steps = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{owned}'")
    assert [r.data.tags["rest.step"] for r in steps] == ["validate"]
