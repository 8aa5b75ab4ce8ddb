"""Security: safe model loading, no code rewards unless allowed, object keys that cannot escape
their prefix, and no secret in logs, compiled YAML, MLflow params or exception text.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import traceback

import pytest

from tests.conftest import ROOT

SECRET = "Zq9-DISTINCTIVE-s3cr3t-Xv7"
ACCESS = "AKIA-DISTINCTIVE-ACCESS"


# -- model loading -----------------------------------------------------------------------------

@pytest.fixture
def bin_only_policy(tmp_path, tiny_policy):
    """The tiny policy with its weights as a pickled pytorch_model.bin instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    d = tmp_path / "bin-policy"
    shutil.copytree(tiny_policy, d)
    weights = load_file(str(d / "model.safetensors"))
    os.remove(d / "model.safetensors")
    torch.save(weights, d / "pytorch_model.bin")
    return str(d)


def test_pickled_weights_are_refused(bin_only_policy):
    from rest.model.policy import PolicyError, load_policy

    with pytest.raises(PolicyError, match=r"no \*\.safetensors weights \(found PyTorch \.bin weights: "
                                          r"re-save with safe_serialization=True\)"):
        load_policy(bin_only_policy)


def test_transformers_itself_is_asked_for_safetensors_only(bin_only_policy):
    """Second line of defence: even past our own check, loading a .bin (a pickle) fails."""
    from transformers import AutoModelForSeq2SeqLM

    with pytest.raises((OSError, ValueError), match=r"safetensors|model\.safetensors"):
        AutoModelForSeq2SeqLM.from_pretrained(bin_only_policy, use_safetensors=True)


def test_model_directory_code_never_runs_unless_trusted(tmp_path, tiny_policy):
    from rest.model.policy import PolicyError, load_policy
    from rest.steps.validate import validate_run

    d = tmp_path / "remote-code"
    shutil.copytree(tiny_policy, d)
    marker = tmp_path / "code-ran"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import MBartConfig as C\n"
                               "from transformers import MBartForConditionalGeneration as M\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.C", "AutoModelForSeq2SeqLM": "evil.M"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PolicyError, match=r"auto_map.*bootstrap\.trust_remote_code=true"):
        validate_run({}, check_data=False, initial_policy=str(d))
    try:
        load_policy(str(d))  # trust_remote_code defaults to off
    except (ValueError, OSError):
        pass  # refusing is fine too; running the code is not
    assert not marker.exists(), "the model directory's own code ran without trust_remote_code"


def test_trust_remote_code_is_off_by_default():
    from rest.config import RunConfig

    assert RunConfig().bootstrap.trust_remote_code is False
    assert RunConfig().score.allow_code_reward is False


# -- code rewards ---------------------------------------------------------------------------------

@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "my_reward_mod.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "def score(sources, candidates, references):\n    return [0.5] * len(candidates)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("my_reward_mod", None)


def test_dotted_path_reward_refused_unless_allowed(reward_module):
    from rest.config import ConfigError, ScoreConfig
    from rest.rewards.metrics import RewardError, get_reward

    with pytest.raises(RewardError, match=r"dotted path that runs code; set score\.allow_code_reward=true"):
        get_reward("my_reward_mod:score")
    with pytest.raises(ConfigError, match=r"score\.reward: 'my_reward_mod:score' is a dotted path"):
        ScoreConfig(reward="my_reward_mod:score")
    assert not reward_module.exists(), "the module was imported although code rewards are off"
    fn = get_reward("my_reward_mod:score", allow_code=True)
    assert fn(["a"], ["b"], ["c"]) == [0.5] and reward_module.exists()


def test_score_step_refuses_a_code_reward_that_slipped_past_the_config(tmp_path, reward_module):
    from rest.config import ScoreConfig
    from rest.services.files import write_jsonl
    from rest.rewards.metrics import RewardError
    from rest.steps.score import score

    write_jsonl(str(tmp_path / "g" / "data.jsonl"), [{"id": "1", "source": "a", "candidate": "b", "reference": "c"}])
    cfg = ScoreConfig()
    object.__setattr__(cfg, "reward", "my_reward_mod:score")  # as if the config check were bypassed
    with pytest.raises(RewardError, match="allow_code_reward"):
        score(str(tmp_path / "g"), cfg, str(tmp_path / "s"))
    assert not reward_module.exists()


# -- object keys ------------------------------------------------------------------------------------

@pytest.fixture
def store():
    from rest.services.storage import ArtifactStore, S3Settings

    return ArtifactStore(S3Settings(endpoint="127.0.0.1:9", bucket="rest", prefix="runs"))


@pytest.mark.parametrize("run, name", [
    ("..", "policy"), ("run", "../../other-run/policy"), ("run", "a/../../x"), ("/abs", "policy"),
    ("run", "/etc/passwd"), ("run", "a\\..\\..\\x"), ("r\\un", "policy"), ("a/b", "policy"), (".", "policy"),
    ("run", "./policy"), ("run", "policy/"), ("run", ""), ("", "policy"), ("run", "a//b"), ("run", "x\n/../y"),
])
def test_object_keys_cannot_escape_the_run_prefix(store, run, name):
    from rest.services.storage import StorageError

    with pytest.raises(StorageError, match=r"object key (run|name) .*(absolute|backslash|empty|'\.\.'|single name|"
                                           r"control characters)"):
        store.key_for(run, 1, 2, name)


@pytest.mark.parametrize("g, i", [(-1, 0), (0, -1), ("1", 0), (True, 0), (1.5, 0)])
def test_object_key_indices_must_be_plain_integers(store, g, i):
    from rest.services.storage import StorageError

    with pytest.raises(StorageError, match=r"must be an integer >= 0"):
        store.key_for("run", g, i, "x")


def test_good_keys_stay_under_the_prefix(store):
    from rest.services.storage import StorageError, parse_uri

    assert store.key_for("local-1", 1, 2, "policy/model.safetensors") == "runs/local-1/1/2/policy/model.safetensors"
    for bad in ("s3://rest/runs/../x", "s3://rest//abs", "s3://rest/a\\b"):
        with pytest.raises(StorageError):
            parse_uri(bad)


# -- secrets ------------------------------------------------------------------------------------------

def test_no_secret_in_compiled_yaml_errors_logs_or_params(tmp_path, monkeypatch, caplog):
    from rest.services import storage
    from rest.config import RunConfig
    from rest.services.tracking import flatten
    from tests.servers import free_port

    env = {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": ACCESS,
           "REST_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_PASSWORD": SECRET}
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    # 1. The compiled pipeline refers to the cluster's secret; the value never enters the YAML.
    out = tmp_path / "pipeline.yaml"
    proc = subprocess.run([sys.executable, "pipeline.py", "compile", "--cluster-config",
                           "manifests/cluster-config.example.yaml", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    yaml_text = out.read_text()
    # The secret is referenced by name (a Kubernetes secret mapped to env vars) ...
    assert "envVar: AWS_SECRET_ACCESS_KEY" in yaml_text and "secretName: rest-s3-credentials" in yaml_text
    for text in (yaml_text, proc.stdout, proc.stderr):
        assert SECRET not in text and ACCESS not in text

    # 2. A storage error (nothing listens at the endpoint): not in the message, traceback or logs.
    caplog.set_level(logging.DEBUG)
    settings = dataclasses.replace(storage.S3Settings.from_env(os.environ), max_retries=1, backoff_seconds=0.01,
                                   timeout_seconds=2)
    assert SECRET not in repr(settings) and ACCESS not in repr(settings)
    src = tmp_path / "f.txt"
    src.write_text("x")
    with pytest.raises(storage.StorageError) as err:
        storage.publish(str(src), "run", 1, 1, "f.txt", settings=settings)
    shown = "".join(traceback.format_exception(err.value)) + repr(err.value) + caplog.text
    assert "127.0.0.1" in shown and SECRET not in shown and ACCESS not in shown

    # 3. The validate step's reachability errors.
    from rest.steps.validate import validate_run

    with pytest.raises(ValueError) as err:
        validate_run({}, check_data=False, initial_policy="", s3_settings=settings, timeout_s=2)
    with pytest.raises(ValueError) as err2:
        validate_run({}, check_data=False, initial_policy="",
                     tracking_uri=f"http://user:{SECRET}@127.0.0.1:{free_port()}", timeout_s=2)
    for e in (err.value, err2.value):
        text = "".join(traceback.format_exception(e)) + caplog.text
        assert SECRET not in text and ACCESS not in text

    # 4. MLflow params: the resolved config, plus anything secret-named, flattened for log_batch.
    params = flatten({**RunConfig().to_dict(), "s3": {"secret_key": SECRET, "access_key": ACCESS,
                                                      "endpoint": env["REST_S3_ENDPOINT"]}})
    assert "s3.endpoint" in params
    assert SECRET not in json.dumps(params) and ACCESS not in json.dumps(params)
