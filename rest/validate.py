"""Checks that run before any compute: the config, the data files, the policy, the reward,
and the services the run will talk to (MinIO, MLflow).

Each problem is one clear error naming the field or file (and line) and how to fix it. The
first problem found stops validation: fix it, run again. Everything here is pure: the
object-store settings and the tracking URI are arguments (the component and the CLI read
them from the environment), never read from ``os.environ``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from .config import RunConfig

SERVICE_TIMEOUT_S = 5.0


class ValidationError(ValueError):
    """An input of the run cannot work; the message names it and says how to fix it."""


def validate_run(config: dict, train: str = "", valid: str = "", test: str = "", initial_policy: str | None = None,
                 check_data: bool = True, s3_settings=None, tracking_uri: str | None = None,
                 timeout_s: float = SERVICE_TIMEOUT_S) -> RunConfig:
    """Validate a whole run config (as a dict) plus the run's data, policy, reward and services.

    ``s3_settings`` (a :class:`rest.storage.S3Settings`) and ``tracking_uri`` are checked for
    reachability when given. Raises ``ConfigError`` / ``DataError`` / ``PolicyError`` /
    ``RewardError`` / :class:`ValidationError` (all ``ValueError``) on the first problem.
    """
    cfg = RunConfig.from_dict(config)
    data = dataclasses.replace(cfg.data, train=train or cfg.data.train,
                               valid=valid if valid is not None else cfg.data.valid,
                               test=test if test is not None else cfg.data.test)
    policy = cfg.bootstrap.policy if initial_policy is None else initial_policy
    check_reward(cfg)
    if policy and not policy.startswith(("s3://", "models:/")):
        check_policy(policy, cfg.bootstrap.trust_remote_code, what="initial policy")
    if s3_settings is not None:
        check_object_store(s3_settings, timeout_s)
    if tracking_uri:
        check_tracking(tracking_uri, timeout_s)
    if check_data:
        check_data_files(data, s3_settings)
    return cfg


# -- reward ---------------------------------------------------------------------------------

def check_reward(cfg: RunConfig) -> None:
    from .rewards import RewardError, get_reward

    sc = cfg.score
    if sc.reward == "reward_model":
        # Loading the model is the score step's job; here its directory must be usable.
        if sc.reward_model_path and not sc.reward_model_path.startswith("s3://"):
            check_policy(sc.reward_model_path, False, what="score.reward_model_path")
        return
    try:
        fn = get_reward(sc.reward, sc.reward_model_path, sc.allow_code_reward)
    except RewardError as e:
        raise RewardError(f"score.reward: {e}") from None
    if cfg.data.sources and not getattr(fn, "reference_free", False):
        raise ValidationError(f"data.sources: source-only text has no references, but score.reward={sc.reward!r} "
                              "compares with a reference; use score.reward=reward_model with "
                              "score.reward_model_path (train one with `python -m rest reward-model`)")


# -- model directories ------------------------------------------------------------------------

def check_policy(path: str, trust_remote_code: bool = False, what: str = "policy") -> None:
    """A model directory: weights (safetensors), a readable config.json, a tokenizer, no unasked code."""
    from .policy import PolicyError, check_policy_dir

    if what == "initial policy" and not os.path.isdir(path):
        raise PolicyError(f"{what}: {path}: policy directory not found; set bootstrap.policy to a "
                          "save_pretrained() directory, or to '' to train the BC policy from scratch")
    try:
        check_policy_dir(path)
    except PolicyError as e:
        raise PolicyError(f"{what}: {e}") from None
    cfg_path = os.path.join(path, "config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            model_cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError(f"{what}: {cfg_path}: not a readable JSON model config ({e}); "
                          "re-save the model with save_pretrained()") from None
    if not isinstance(model_cfg, dict) or not model_cfg.get("model_type"):
        raise PolicyError(f"{what}: {cfg_path}: no 'model_type'; re-save the model with save_pretrained()")
    if model_cfg.get("auto_map") and not trust_remote_code:
        raise PolicyError(f"{what}: {cfg_path} asks to run the directory's own Python code (auto_map); "
                          "use a built-in architecture, or set bootstrap.trust_remote_code=true if you trust it")


# -- data -----------------------------------------------------------------------------------------

def check_data_files(data, s3_settings=None) -> None:
    """Load every given split with the row checks of ``rest.data`` plus a same-language check."""
    from .data import DataError, check_languages, load_pairs, load_sources, split_counts

    def load(uri, loader):
        if uri.startswith("s3://") and s3_settings is not None:
            from . import storage

            with tempfile.TemporaryDirectory(prefix="rest-validate-") as tmp:
                return loader(storage.fetch_to_local(uri, tmp, settings=s3_settings), data)
        return loader(uri, data)

    if data.sources:
        load(data.sources, load_sources)
    for name in ("train", "valid", "test"):
        uri = getattr(data, name)
        if not uri:
            continue
        rows = load(uri, load_pairs)
        check_languages(rows, uri, data)
        if name == "train" and not (data.valid and data.test):
            n_valid, n_test = split_counts(rows, data)
            if (not data.valid and n_valid == 0) or (not data.test and n_test == 0):
                raise DataError(f"{uri}: too few rows ({len(rows)}) to split off "
                                f"{'valid' if not data.valid and n_valid == 0 else 'test'} rows by "
                                "data.valid_fraction/data.test_fraction; give data.valid and data.test files")


# -- services -------------------------------------------------------------------------------------

def check_object_store(settings, timeout_s: float = SERVICE_TIMEOUT_S) -> None:
    """The object store answers and accepts the credentials (one quick bucket query, no retries)."""
    from .storage import ArtifactStore, StorageError

    quick = dataclasses.replace(settings, max_retries=0, timeout_seconds=timeout_s)
    store = ArtifactStore(quick)
    try:
        store._call(f"check bucket {quick.bucket}", store.client.bucket_exists, quick.bucket)
    except StorageError as e:
        raise ValidationError(f"object store: {e}; check REST_S3_ENDPOINT (host:port of MinIO), "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None


def redact_uri(uri: str) -> str:
    """``uri`` without a password in its user-info part (safe to log or show)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if parts.password is None and "@" not in parts.netloc:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else host))


def check_tracking(uri: str, timeout_s: float = SERVICE_TIMEOUT_S) -> None:
    """An http(s) MLflow tracking server answers ``GET /health``; a local store's directory exists."""
    shown = redact_uri(uri)
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout_s) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ValidationError(f"MLflow tracking server {shown}: unreachable ({type(e).__name__}: "
                                  f"{str(reason).replace(uri, shown)}); start it or fix MLFLOW_TRACKING_URI") from None
        if status != 200:
            raise ValidationError(f"MLflow tracking server {shown}: GET /health answered HTTP {status}; "
                                  "is this the MLflow server? fix MLFLOW_TRACKING_URI")
    elif scheme in ("sqlite", "file", ""):
        # sqlite:///rel.db is relative, sqlite:////abs.db absolute (SQLAlchemy's rule).
        path = uri[len("sqlite:///"):] if scheme == "sqlite" else urllib.parse.urlsplit(uri).path if scheme else uri
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ValidationError(f"MLflow tracking store {shown}: directory {parent} does not exist; create it "
                                  "or fix MLFLOW_TRACKING_URI")
    else:
        raise ValidationError(f"MLflow tracking URI {shown}: unsupported scheme {scheme!r}; use http(s)://host:port "
                              "or sqlite:///path")

