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
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from rest.config import RunConfig

SERVICE_TIMEOUT_S = 5.0
OVERLAP_EXAMPLES = 3  # sentences quoted in an overlap message
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "sentencepiece.bpe.model", "spiece.model", "source.spm", "target.spm", "vocab.json",
                   "merges.txt", "config.json", "generation_config.json", "rest_translation.json")

log = logging.getLogger(__name__)


class ValidationError(ValueError):
    """An input of the run cannot work; the message names it and says how to fix it."""


def validate_run(config: dict, train: str = "", valid: str = "", test: str = "", initial_policy: str | None = None,
                 check_data: bool = True, s3_settings=None, tracking_uri: str | None = None,
                 timeout_s: float = SERVICE_TIMEOUT_S, warnings: list[str] | None = None,
                 check_devices: bool = True) -> RunConfig:
    """Validate a whole run config (as a dict) plus the run's data, policy, reward and services.

    ``check_devices``: the steps will run on this machine (the CLI, run-local), so a step set
    to ``cuda`` needs a CUDA device here. On a cluster the steps run in other pods: the
    pipeline's compile step checks the devices against the cluster config's GPU requests
    instead (``rest_kfp.cluster.check_step_devices``).

    ``s3_settings`` (a :class:`rest.services.storage.S3Settings`) and ``tracking_uri`` are checked for
    reachability when given; an ``s3://`` or ``models:/`` initial policy is looked up there.
    Raises ``ConfigError`` / ``DataError`` / ``PolicyError`` / ``RewardError`` /
    :class:`ValidationError` (all ``ValueError``) on the first problem. What will work but
    deserves a look (over-long rows that will be skipped, sources over the policy's token
    limit, validation sentences also in train) is logged and appended to ``warnings``.
    """
    warnings = warnings if warnings is not None else []
    cfg = RunConfig.from_dict(config)
    data = dataclasses.replace(cfg.data, train=train or cfg.data.train,
                               valid=valid if valid is not None else cfg.data.valid,
                               test=test if test is not None else cfg.data.test)
    policy = cfg.bootstrap.policy if initial_policy is None else initial_policy
    trust = cfg.bootstrap.trust_remote_code
    check_reward(cfg)
    if check_devices:
        check_step_devices(cfg, trains_bc=not policy)
    if policy and not policy.startswith(("s3://", "models:/")):
        check_policy(policy, trust, what="initial policy", seq2seq=True)
    if s3_settings is not None:
        check_object_store(s3_settings, timeout_s)
    if tracking_uri:
        check_tracking(tracking_uri, timeout_s)
    with tempfile.TemporaryDirectory(prefix="rest-validate-policy-") as tmp:
        # The directory the token counts use: the local policy, or its small files fetched from S3.
        local_policy = policy if policy and not policy.startswith(("s3://", "models:/")) else None
        if policy.startswith("s3://"):
            local_policy = check_s3_policy(policy, s3_settings, tmp, trust, timeout_s)
        elif policy.startswith("models:/"):
            check_registry_policy(policy, tracking_uri)
        if local_policy is not None:
            check_translation(local_policy, data, trust, warnings)
        if check_data:
            check_data_files(data, s3_settings, policy_dir=local_policy, trust_remote_code=trust,
                             warnings=warnings)
    return cfg


def check_translation(policy_dir: str, data, trust_remote_code: bool = False, warnings: list[str] | None = None):
    """The policy is a translation family this project serves and its languages map to its own codes.

    Resolves what bootstrap will record (``rest.model.families``): an unknown ``model_type``, a
    multilingual model whose source or target language cannot be told or has no code there,
    or a tokenizer that does not load is an error; a T5 without a source prefix is a warning.
    Returns the resolved ``Translation`` (None for a decoder-only policy).
    """
    from rest.model import causal, families

    if causal.is_causal_dir(policy_dir):
        return None
    warnings = warnings if warnings is not None else []
    try:
        found = families.resolve_dir(policy_dir, data, trust_remote_code, warnings)
    except families.FamilyError as e:
        raise ValidationError(f"initial policy: {policy_dir}: {e}") from None
    log.info("validate: the policy translates as %s", families.describe(found))
    return found


def _warn(warnings: list[str], message: str) -> None:
    log.warning("validate: %s", message)
    warnings.append(message)


# -- devices --------------------------------------------------------------------------------

def computing_steps(cfg: RunConfig, trains_bc: bool = True) -> list[str]:
    """The config sections whose ``device`` setting this run uses (each step that computes)."""
    learned = cfg.score.reward == "reward_model"
    steps = ["sample", "finetune", "evaluate"]
    if trains_bc:
        steps.append("bootstrap")
    if learned:
        steps.append("score")
        if not cfg.score.reward_model_path:
            steps.append("reward_model")
    return steps


def check_step_devices(cfg: RunConfig, trains_bc: bool = True) -> None:
    """Every computing step's device exists here; finetune's precision and process count can be served;
    CTranslate2 has each generating step's compute type on its device."""
    from rest.model.device import check_compute_type, resolve
    from rest.model.distributed import plan

    for step in computing_steps(cfg, trains_bc):
        section = getattr(cfg, step)
        if step == "finetune":
            plan(section.device, section.precision, section.processes, "finetune")
            continue
        device = resolve(section.device, f"{step}.device")
        if getattr(section, "backend", "") == "ctranslate2":
            check_compute_type(section.compute_type, device, f"{step}.compute_type")


# -- reward ---------------------------------------------------------------------------------

def check_reward(cfg: RunConfig) -> None:
    from rest.rewards.metrics import RewardError, get_reward

    sc = cfg.score
    if sc.reward == "reward_model":
        # Loading the model is the score step's job; here its directory must be usable.
        if sc.reward_model_path and not sc.reward_model_path.startswith("s3://"):
            check_policy(sc.reward_model_path, False, what="score.reward_model_path")
        return
    try:
        from rest.rewards.metrics import reward_options

        fn = get_reward(sc.reward, sc.reward_model_path, sc.allow_code_reward, reward_options(sc.reward, sc))
    except RewardError as e:
        raise RewardError(f"score.reward: {e}") from None
    if cfg.data.sources and not getattr(fn, "reference_free", False):
        raise ValidationError(f"data.sources: source-only text has no references, but score.reward={sc.reward!r} "
                              "compares with a reference; use score.reward=reward_model with "
                              "score.reward_model_path (train one with `python -m rest reward-model`)")


# -- model directories ------------------------------------------------------------------------

def check_policy(path: str, trust_remote_code: bool = False, what: str = "policy", seq2seq: bool = False) -> None:
    """A model directory: weights (safetensors with a readable header), a readable config.json, a
    tokenizer, no unasked code; with ``seq2seq``, an architecture ``AutoModelForSeq2SeqLM`` loads."""
    from rest.model.policy import PolicyError, check_policy_dir

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
    check_model_config(model_cfg, cfg_path, trust_remote_code, what, seq2seq)


def check_model_config(model_cfg: dict, cfg_path: str, trust_remote_code: bool, what: str, seq2seq: bool) -> None:
    """config.json's checks: a model_type, no unasked remote code, (for a policy) a seq2seq or causal LM."""
    from rest.model.policy import PolicyError

    if not isinstance(model_cfg, dict) or not model_cfg.get("model_type"):
        raise PolicyError(f"{what}: {cfg_path}: no 'model_type'; re-save the model with save_pretrained()")
    auto_map = model_cfg.get("auto_map") or {}
    if auto_map and not trust_remote_code:
        raise PolicyError(f"{what}: {cfg_path} asks to run the directory's own Python code (auto_map); "
                          "use a built-in architecture, or set bootstrap.trust_remote_code=true if you trust it")
    if not seq2seq or (trust_remote_code and ("AutoModelForSeq2SeqLM" in auto_map or "AutoModelForCausalLM" in auto_map)):
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES as MASKED
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES as SEQ2SEQ

    from rest.model.causal import is_causal_config

    model_type = model_cfg["model_type"]
    # A decoder-only policy (AutoModelForCausalLM); encoder families (BERT, RoBERTa: masked LMs
    # with a causal head bolted on) are not generative policies.
    if is_causal_config(model_cfg) and model_type in CAUSAL and model_type not in MASKED:
        archs = [a for a in model_cfg.get("architectures") or [] if isinstance(a, str)]
        if archs and not any(a in set(CAUSAL.values()) or a.endswith("ForCausalLM") for a in archs):
            raise PolicyError(f"{what}: {cfg_path}: architectures {archs} hold no causal language-model head "
                              f"(for {model_type!r}: {CAUSAL[model_type]}); give a generative model's directory")
        return
    if model_type not in SEQ2SEQ:
        raise PolicyError(f"{what}: {cfg_path}: model_type {model_type!r} is not an encoder-decoder (seq2seq) "
                          f"model that AutoModelForSeq2SeqLM can load; a translation policy must be one of: "
                          f"{', '.join(sorted(SEQ2SEQ))} (e.g. mbart, marian, t5), or a decoder-only causal LM that "
                          "AutoModelForCausalLM loads (e.g. llama, qwen2, gpt2)")
    archs = [a for a in model_cfg.get("architectures") or [] if isinstance(a, str)]
    lm_heads = set(SEQ2SEQ.values()) | {"EncoderDecoderModel"}
    if archs and not any(a in lm_heads for a in archs):
        # e.g. BartForSequenceClassification: the seq2seq class would load it with a fresh, untrained LM head.
        raise PolicyError(f"{what}: {cfg_path}: architectures {archs} hold no seq2seq language-model head "
                          f"(for {model_type!r}: {SEQ2SEQ[model_type]}); give a translation model's directory")


def check_s3_policy(uri: str, s3_settings, tmp: str, trust_remote_code: bool = False,
                    timeout_s: float = SERVICE_TIMEOUT_S) -> str:
    """An ``s3://`` policy prefix: published (a manifest) with config.json, safetensors weights whose
    headers parse, and a tokenizer. Fetches only the small files (config, tokenizer) into ``tmp``
    and returns that directory, for the token-length checks; the weights stay where they are."""
    from rest.model.policy import PolicyError
    from rest.services.storage import MANIFEST, ArtifactStore, StorageError, parse_uri

    what = "initial policy"
    if s3_settings is None:
        raise ValidationError(f"{what}: {uri}: an s3:// policy needs the object store: set REST_S3_ENDPOINT "
                              "(host:port of MinIO), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    try:
        bucket, key = parse_uri(uri)
        quick = dataclasses.replace(s3_settings, bucket=bucket, max_retries=0, timeout_seconds=timeout_s)
        store = ArtifactStore(quick)
        manifest = store.read_manifest(key)
        if manifest is None:
            found = store.list(key + "/")[:3]
            raise ValidationError(f"{what}: {uri}: no {MANIFEST} under this prefix"
                                  f"{' (objects there: ' + ', '.join(found) + ')' if found else ' (the prefix is empty)'}"
                                  "; a policy prefix is readable once it is published whole: give the prefix a run "
                                  "published, or publish the directory with rest.services.storage.ArtifactStore.put_dir")
        files = manifest["files"]
        if "config.json" not in files:
            raise PolicyError(f"{what}: {uri}: no config.json in {MANIFEST}; publish a save_pretrained() directory")
        weights = sorted(f for f in files if f.endswith(".safetensors"))
        if not weights:
            raise PolicyError(f"{what}: {uri}: no *.safetensors weights in {MANIFEST}")
        if not ({"tokenizer.json", "tokenizer_config.json"} & set(files) or any(f.endswith(".model") for f in files)):
            raise PolicyError(f"{what}: {uri}: no tokenizer files in {MANIFEST}; save the tokenizer beside the model")
        for name in weights:
            _check_s3_safetensors(store, f"{key}/{name}", int(files[name].get("size") or 0), f"{uri}/{name}")
        local = os.path.join(tmp, "policy")
        os.makedirs(local, exist_ok=True)
        for name in files:
            if name in TOKENIZER_FILES or name.endswith(".model"):
                store.get_file(f"{key}/{name}", os.path.join(local, name), files[name].get("sha256"))
    except StorageError as e:
        raise ValidationError(f"{what}: {uri}: {e}; check REST_S3_ENDPOINT and the credentials") from None
    try:
        with open(os.path.join(local, "config.json"), encoding="utf-8") as f:
            model_cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError(f"{what}: {uri}/config.json: not a readable JSON model config ({e})") from None
    check_model_config(model_cfg, f"{uri}/config.json", trust_remote_code, what, seq2seq=True)
    return local


def _check_s3_safetensors(store, key: str, size: int, shown: str) -> None:
    """Read just a remote safetensors file's header (a ranged GET) and check it fits the file."""
    from rest.model.policy import PolicyError

    def read(offset: int, length: int) -> bytes:
        resp = store.client.get_object(store.settings.bucket, key, offset=offset, length=length)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    bad = f"initial policy: {shown}: not a readable safetensors file ({size} bytes"
    if size < 8:
        raise PolicyError(f"{bad}: too small for a header); publish the policy again")
    n = int.from_bytes(store._call(f"read {key}", read, 0, 8), "little")
    if n <= 0 or 8 + n > size or n > 100_000_000:
        raise PolicyError(f"{bad}: header length {n} does not fit); the upload is truncated or not weights: "
                          "publish the policy again")
    try:
        header = json.loads(store._call(f"read {key}", read, 8, n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise PolicyError(f"{bad}: header does not parse: {e}); publish the policy again") from None
    if not ends or 8 + n + max(ends) > size:
        raise PolicyError(f"{bad}: the header names {len(ends)} tensors ending at byte {8 + n + max(ends, default=0)}); "
                          "the upload is truncated: publish the policy again")



def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` → (name, version, alias)."""
    body = uri[len("models:/"):].strip("/")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        if name and alias and "/" not in alias:
            return name, None, alias
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version:
            return name, version, None
    raise ValidationError(f"initial policy: {uri}: not a registry URI; use models:/NAME/VERSION or models:/NAME@ALIAS "
                          "(e.g. models:/rest-de-en@champion)")


def check_registry_policy(uri: str, tracking_uri: str | None) -> dict:
    """A ``models:/`` policy resolves in the MLflow registry: the model, and its version or alias.

    Returns ``{"name", "version", "source"}``. Call :func:`check_tracking` first: it fails fast
    on an unreachable server, where MLflow's own client would retry for minutes.
    """
    what = "initial policy"
    name, version, alias = parse_models_uri(uri)
    if not tracking_uri:
        raise ValidationError(f"{what}: {uri}: a registry model needs the MLflow server holding it: set "
                              "MLFLOW_TRACKING_URI (e.g. http://mlflow:5000)")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    shown = redact_uri(tracking_uri)
    try:
        try:
            client.get_registered_model(name)
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code):
                raise ValidationError(f"{what}: {uri}: no registered model {name!r} on {shown}; register one "
                                      "(the pipeline's register step) or fix the name") from None
            raise
        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code) or "INVALID_PARAMETER_VALUE" in str(e.error_code):
                which = f"alias {alias!r}" if alias else f"version {version!r}"
                raise ValidationError(f"{what}: {uri}: model {name!r} on {shown} has no {which}; list its versions "
                                      "in the MLflow UI, or promote one (`python pipeline.py promote`)") from None
            raise
    except MlflowException as e:
        raise ValidationError(f"{what}: {uri}: the MLflow registry at {shown} answered: "
                              f"{str(e.message).replace(tracking_uri, shown)[:300]}") from None
    except (OSError, ConnectionError) as e:
        raise ValidationError(f"{what}: {uri}: MLflow at {shown} unreachable ({type(e).__name__}); start it or fix "
                              "MLFLOW_TRACKING_URI") from None
    return {"name": name, "version": str(mv.version), "source": mv.source}


# -- data -----------------------------------------------------------------------------------------

def check_data_files(data, s3_settings=None, policy_dir: str | None = None, trust_remote_code: bool = False,
                     warnings: list[str] | None = None) -> None:
    """Load every given split with the row checks of ``rest.steps.data`` plus a same-language check.

    Over-long rows are reported (skipped later) or, with ``data.overlong=error``, an error.
    Given splits must not share sentences with test (see :func:`check_overlap`). With a
    ``policy_dir``, rows over the policy's token limit are counted with its tokenizer.
    """
    from rest.steps.data import DataError, Skipped, check_languages, load_pairs, load_sources, split_counts

    warnings = warnings if warnings is not None else []

    def load(uri, loader, skipped):
        if uri.startswith("s3://") and s3_settings is not None:
            from rest.services import storage

            with tempfile.TemporaryDirectory(prefix="rest-validate-") as tmp:
                return loader(storage.fetch_to_local(uri, tmp, settings=s3_settings), data, skipped=skipped)
        return loader(uri, data, skipped=skipped)

    skipped = Skipped()
    splits: dict[str, list[dict]] = {}
    if data.sources:
        load(data.sources, load_sources, skipped)
    for name in ("train", "valid", "test", "grow", "hard_test"):
        uri = getattr(data, name)
        if not uri:
            continue
        rows = load(uri, load_pairs, skipped)
        splits[name] = rows
        if name in ("grow", "hard_test"):
            continue  # a Grow pool (answers only) or a second test set: not BC data
        check_languages(rows, uri, data)
        if name == "train" and not (data.valid and data.test):
            n_valid, n_test = split_counts(rows, data)
            if (not data.valid and n_valid == 0) or (not data.test and n_test == 0):
                raise DataError(f"{uri}: too few rows ({len(rows)}) to split off "
                                f"{'valid' if not data.valid and n_valid == 0 else 'test'} rows by "
                                "data.valid_fraction/data.test_fraction; give data.valid and data.test files")
    if skipped.count:
        _warn(warnings, f"{skipped.count} over-long rows will be skipped (data.overlong=skip; over "
                        f"data.max_words={data.max_words}): {skipped.describe()}")
    check_overlap(data, splits, warnings)
    if policy_dir is not None:
        check_token_lengths(data, splits, policy_dir, trust_remote_code, warnings)


def check_overlap(data, splits: dict[str, list[dict]], warnings: list[str]) -> None:
    """Test sentences must be unseen: a test source that is also a train or valid source leaks.

    train∩test and valid∩test sources are errors (the reported test figures would be inflated,
    or checkpoints picked on test sentences); train∩valid sources and ids shared between files
    are warnings (validation gets optimistic; ids are only labels).
    """
    def sources(name):
        return {r["source"] for r in splits.get(name, ())}

    # data.grow rows whose sources are valid/test sources are dropped by prepare (a warning here);
    # data.hard_test must be unseen like test.
    for a, b, fatal in (("train", "test", True), ("valid", "test", True), ("train", "valid", False),
                        ("train", "hard_test", True), ("grow", "hard_test", True), ("grow", "test", False)):
        if a not in splits or b not in splits:
            continue
        common = sources(a) & sources(b)
        if common:
            shown = "; ".join(repr(t[:60]) for t in sorted(common)[:OVERLAP_EXAMPLES])
            msg = (f"{len(common)} source sentences of {getattr(data, b)} ({b}) are also in {getattr(data, a)} ({a}), "
                   f"e.g. {shown}")
            if fatal:
                raise ValidationError(f"data.{b}: {msg}; test sentences seen in {a} make the reported figures "
                                      f"optimistic: remove them from one of the files")
            _warn(warnings, f"data.{b}: {msg}; validation will be optimistic")
        ids_a = {r["id"] for r in splits[a]}
        shared = [r["id"] for r in splits[b] if r["id"] in ids_a]
        if shared:
            _warn(warnings, f"data.{b}: {len(shared)} ids also used in {a} (e.g. {', '.join(map(repr, shared[:3]))}); "
                            "ids label rows in the outputs, so give each file its own")


def check_token_lengths(data, splits: dict[str, list[dict]], policy_dir: str, trust_remote_code: bool,
                        warnings: list[str]) -> int:
    """Count rows over the policy's maximum length in tokens, with its own tokenizer.

    Training skips such pairs and translation truncates such sources; with
    ``data.overlong=error`` they are an error here. Returns the count.
    """
    from transformers import AutoTokenizer

    from rest.model import causal, families
    from rest.model.policy import PolicyError, max_tokens

    try:
        tokenizer = AutoTokenizer.from_pretrained(policy_dir, trust_remote_code=trust_remote_code)
    except Exception as e:  # any loader error: the policy cannot tokenize, so it cannot run
        raise PolicyError(f"initial policy: {policy_dir}: the tokenizer does not load ({type(e).__name__}: "
                          f"{str(e)[:200]}); save it with tokenizer.save_pretrained() beside the model") from None
    with open(os.path.join(policy_dir, "config.json"), encoding="utf-8") as f:
        limit = max_tokens(model_config=json.load(f), tokenizer=tokenizer)
    if limit is None:
        return 0
    def plain(tok, texts, **kw):
        return tok(list(texts), **kw)

    encode = {"source": plain, "target": plain}
    if not causal.is_causal_dir(policy_dir):
        # Counted as the steps will encode them: prefix and language codes, targets with text_target.
        try:
            families.attach(None, tokenizer, families.resolve_dir(policy_dir, data, trust_remote_code, [],
                                                                  tokenizer=tokenizer))
        except families.FamilyError as e:
            raise ValidationError(f"initial policy: {policy_dir}: {e}") from None
        encode = {"source": families.encode_sources, "target": families.encode_targets}
    over, total = [], 0
    for name, rows in splits.items():
        uri = getattr(data, name)
        for col in ("source", "target"):
            texts = [r[col] for r in rows]
            for k in range(0, len(texts), 1000):  # batches keep memory flat on a big corpus
                lengths = [len(ids) for ids in encode[col](tokenizer, texts[k:k + 1000], verbose=False)["input_ids"]]
                over += [(uri, rows[k + j]["id"], col, n) for j, n in enumerate(lengths) if n > limit]
        total += len(rows)
    if not over:
        return 0
    rows_over = len({(u, i) for u, i, _, _ in over})
    shown = "; ".join(f"{u} id {i!r}: {c} has {n} tokens" for u, i, c, n in over[:5])
    msg = (f"{rows_over} of {total} rows are over the policy's maximum of {limit} tokens ({shown}"
           f"{', ...' if len(over) > 5 else ''})")
    if data.overlong == "error":
        raise ValidationError(f"data: {msg}; split them, or set data.overlong=skip (training then skips them "
                              "and translation truncates them)")
    _warn(warnings, f"{msg}: training will skip them and translation will truncate them to {limit} tokens")
    return rows_over


# -- services -------------------------------------------------------------------------------------

def check_object_store(settings, timeout_s: float = SERVICE_TIMEOUT_S) -> None:
    """The object store answers and accepts the credentials (one quick bucket query, no retries)."""
    from rest.services.storage import ArtifactStore, StorageError

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

