"""`python pipeline.py promote ...` typed as the README shows it, against a real `mlflow server`."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.servers import mlflow_server, s3_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration
NAME = "rest-promote-cli"


def promote(version, env, *extra):
    # The README's command, with this test's model name and version.
    cmd = [sys.executable, "pipeline.py", "promote", "--model-name", NAME, "--version", str(version),
           "--test", "data/libreoffice-de-en/test.tsv", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_promote_as_typed_in_the_readme(mlflow_server, tiny_policy, tmp_path):
    from mlflow import MlflowClient

    from rest.services import registry

    version = registry.register_policy(tiny_policy, NAME, mlflow_server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "REST_"))}
    env.update(MLFLOW_TRACKING_URI=mlflow_server.url, OMP_NUM_THREADS="1")
    out = tmp_path / "decision.json"
    res = promote(version, env, "--n-bootstrap", "100", "--output", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    decision = json.loads(res.stdout)
    assert decision["model"] == NAME and decision["candidate_version"] == str(version)
    assert decision["promoted"] is True and decision["decision"] == "first champion"
    assert decision["test_size"] == 1160  # the whole bundled test split was read from the TSV
    assert json.loads(out.read_text()) == decision
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    assert client.get_model_version_by_alias(NAME, "champion").version == str(version)

    # A wrong flag is an argparse error naming it, not a traceback.
    res = promote(version, env, "--versoin", "1")
    assert res.returncode == 2 and "unrecognized arguments: --versoin" in res.stderr
