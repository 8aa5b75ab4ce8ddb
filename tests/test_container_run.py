"""The pipeline inside the built images (marker ``container``): every task a container of the
component image, tracking served by a container of the MLflow server image.

Each container runs like a pod of the compiled pipeline on a cluster: uid 1000, read-only
root filesystem, ``/tmp`` a tmpfs and the only writable place besides KFP's pipeline root,
all capabilities dropped, no privilege escalation; the host network, so the S3 server and
the MLflow server stay on 127.0.0.1.

These tests build the images first (``containers/build.sh --local``: a Debian-packaged base,
no registry; cached layers, the project layer rebuilt from the working tree), so they run
only when selected: ``python -m pytest -m container`` (or REST_CONTAINER_TESTS=1), and they
skip when no Docker engine answers (``bash containers/docker-up.sh`` starts one).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.servers import free_port, s3_server  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTAINERS = os.path.join(ROOT, "containers")
sys.path.insert(0, CONTAINERS)

pytestmark = [pytest.mark.container]
MODEL = "rest-container"
TINY = ["--data.grow_sources", "12", "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5",
        "--filter.thresholds", "0.05,0.1", "--filter.keep_references", "true", "--finetune.epochs", "1"]
BUILD_TIMEOUT = 3600


def _selected(config) -> bool:
    return os.environ.get("REST_CONTAINER_TESTS") == "1" or "container" in (config.getoption("-m") or "")


@pytest.fixture(scope="module")
def engine(pytestconfig):
    if not _selected(pytestconfig):
        pytest.skip("container tests build images (minutes): run them with -m container or REST_CONTAINER_TESTS=1")
    try:
        import docker
    except ImportError:
        pytest.skip("the docker Python package is not installed (pinned in the test extras)")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001  (any failure to reach the engine means: skip)
        pytest.skip(f"no Docker engine answers ({type(e).__name__}: {e}); start one: bash containers/docker-up.sh")
    return client


def _build(variant: str) -> tuple[str, float]:
    t0 = time.time()
    res = subprocess.run(["bash", os.path.join(CONTAINERS, "build.sh"), "--local", "--variant", variant],
                         cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert res.returncode == 0, f"build.sh --local --variant {variant} failed:\n{res.stderr[-4000:]}"
    return res.stdout.strip().splitlines()[-1], time.time() - t0


@pytest.fixture(scope="module")
def images(engine):
    """(component image, MLflow server image), built from the working tree."""
    rest_image, t_rest = _build("cpu")
    mlflow_image, t_mlflow = _build("mlflow")
    print(f"\nbuilt {rest_image} in {t_rest:.0f} s, {mlflow_image} in {t_mlflow:.0f} s")
    return rest_image, mlflow_image


@pytest.fixture(scope="module")
def mlflow_container(engine, images, s3_server):
    """The MLflow tracking server as a container of the MLflow server image."""
    import boto3
    from run_tiny_pipeline import start_mlflow_container, stop_container

    s3 = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                      aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key)
    for bucket in ("mlflow-artifacts", "rest-container"):
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)
    container, url = start_mlflow_container(engine, images[1], free_port(), s3_server.env())
    yield url
    stop_container(container)


def _driver(args: list[str], env: dict, timeout: int = 1800) -> subprocess.CompletedProcess:
    """containers/run_tiny_pipeline.py in a fresh interpreter (REST_IMAGE is read at import)."""
    return subprocess.run([sys.executable, os.path.join(CONTAINERS, "run_tiny_pipeline.py"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _clean_env() -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("REST_", "MLFLOW_", "AWS_")):
            env.pop(k)
    return env


def _check_settings(result: dict, image: str) -> None:
    probe = result["probe"]
    assert (probe["uid"], probe["gid"]) == (1000, 1000)
    assert probe["root_writable"] is False and probe["root_error"] == "Read-only file system"
    assert probe["tmp_writable"] and probe["pipeline_root_writable"]
    assert probe["versions"]["python"].startswith("3.11.") and probe["versions"]["torch"].endswith("+cpu")
    assert result["tasks"]
    for t in result["tasks"]:
        assert t["image"] == image and t["exit_code"] == 0, t
        assert t["user"] == "1000:1000" and t["read_only"] is True and t["network_mode"] == "host", t
        assert set(t["tmpfs"]) == {"/tmp"} and t["cap_drop"] == ["ALL"], t


def test_one_component_in_the_image(engine, images, tiny_data, tmp_path):
    """The CI smoke check: the prepare component alone, in the image, under the pod settings."""
    out = tmp_path / "smoke"
    res = _driver(["--image", images[0], "--smoke", "--output-dir", str(out), "--",
                   "--train", tiny_data["train"], "--valid", tiny_data["valid"], "--test", tiny_data["test"],
                   "--source-column", "de", "--target-column", "en"], _clean_env(), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads((out / "containers.json").read_text())
    _check_settings(result, images[0])
    assert [t["task"] for t in result["tasks"]] == ["prepare-op"]
    assert result["outputs"]["test_rows"] == 16 and result["outputs"]["train_rows"] > 0


def test_tiny_pipeline_every_task_in_the_image(engine, images, mlflow_container, s3_server, tiny_data, tiny_policy,
                                               tmp_path):
    out = tmp_path / "run"
    env = {**_clean_env(), **s3_server.env(), "REST_S3_BUCKET": "rest-container", "MLFLOW_TRACKING_URI": mlflow_container,
           "REST_MLFLOW_EXPERIMENT": "rest-container"}
    res = _driver(["--image", images[0], "--output-dir", str(out), "--",
                   "--train", tiny_data["train"], "--valid", tiny_data["valid"], "--test", tiny_data["test"],
                   "--source-column", "de", "--target-column", "en", "--policy", tiny_policy, *TINY,
                   "--loop.model_name", MODEL], env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    result = json.loads((out / "containers.json").read_text())
    _check_settings(result, images[0])
    tasks = {t["task"] for t in result["tasks"]}
    assert {"validate-op", "prepare-op", "bootstrap-op", "sample-op", "score-op", "filter-op", "finetune-op",
            "evaluate-op", "control-op", "summarize-op", "register-op", "finish-op"} <= tasks, tasks
    # The same run as through subprocesses: BC, two Improve steps, the control.
    steps = result["summary"]["steps"]
    assert [(s["g"], s["i"], s["control"]) for s in steps] == [(0, 0, False), (1, 1, False), (1, 2, False),
                                                              (0, 0, True)]
    assert steps[3]["optimizer_steps"] == steps[2]["optimizer_steps"] > 0

    # Tracking went to the MLflow server container: one parent run, FINISHED by the exit task,
    # nested step runs, and the registered model loads by alias from there.
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_container)
    exp = client.get_experiment_by_name("rest-container")
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`rest.pipeline_run` = '{result['pipeline_run']}'")
    parents = [r for r in runs if r.data.tags.get("rest.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    step_runs = {r.data.tags.get("rest.step") for r in runs if r.data.tags.get("rest.role") == "step"}
    assert {"validate", "prepare", "grow-1/sample", "grow-1/improve-2/finetune", "summarize", "register"} <= step_runs
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["rest.pipeline_run"] == result["pipeline_run"]
    import mlflow

    mlflow.set_tracking_uri(mlflow_container)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert isinstance(model.predict(["Wählen Sie Datei - Speichern."])[0], str)

    # The artifacts the tasks published are in the S3 bucket under this run.
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                      aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="rest-container",
                                                         Prefix=f"runs/{result['pipeline_run']}/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert any("/filtered/" in k for k in keys) and any("/policy/" in k for k in keys)
