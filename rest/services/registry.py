"""Model registry: register a policy as an MLflow model and promote it only when it is better.

Why a pyfunc and not ``mlflow.transformers``: transformers 5 removed the ``translation``
pipeline task, and mlflow 3.17's transformers flavor builds a pipeline from the model
and tokenizer, so ``mlflow.transformers.log_model(..., task="translation")`` fails here
("cannot be created as a Pipeline"; checked with this project's MBart policy). The
:class:`TranslationModel` pyfunc wraps the ``save_pretrained`` directory as an artifact
and translates with :func:`rest.model.policy.generate`, the same greedy decoding the
pipeline's evaluation uses; ``rest`` itself is shipped with the model (``code_paths``).

Promotion: the candidate and the current ``champion`` translate a fixed test set; the
candidate takes the ``champion`` alias only if it scores higher and sacrebleu's paired
bootstrap resampling says the difference is significant (p < alpha). Otherwise it is
marked ``challenger``. The decision and its evidence are written to the version's tags
and description.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
from typing import Any, Mapping, Sequence

import mlflow.pyfunc

from rest.stats import paired_bootstrap  # noqa: F401  (one implementation, shared with the run summary)

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
_REST_DIR = os.path.dirname(os.path.abspath(__file__))
_MODEL_SCRIPT = """\
# Logged by rest.services.registry.register_policy: the served model is rest.services.registry.TranslationModel.
import mlflow
from rest.services.registry import TranslationModel

mlflow.models.set_model(TranslationModel())
"""


class TranslationModel(mlflow.pyfunc.PythonModel):
    """Greedy translation (or completion) with a saved policy: seq2seq, or causal (decoder-only).

    Input: a list of source strings or a one-column DataFrame of them (the logged
    signature is a single unnamed string column). Output: one translation per source,
    in order. A causal policy formats each source with the prompt recorded in its lineage
    (``rest.model.causal``) and returns only the completion. ``params``: ``batch_sentences``,
    ``max_length_ratio`` (output tokens per source token, plus 10; default 2).
    """

    def load_context(self, context):
        from rest.model.policy import load_policy, set_threads

        # Threads per served model: mlflow.pyfunc.load_model(uri, model_config={"threads": N});
        # 0 lets torch choose.
        set_threads(int((getattr(context, "model_config", None) or {}).get("threads", 0)))
        self.model, self.tokenizer = load_policy(context.artifacts["policy"])

    def predict(self, context, model_input, params=None):
        from rest.model.policy import generate

        sources = _sources(model_input)
        batch = int((params or {}).get("batch_sentences", 64))
        ratio = float((params or {}).get("max_length_ratio", 2.0))
        return [h[0] for h in generate(self.model, self.tokenizer, sources, mode="greedy", batch_sentences=batch,
                                       max_length_ratio=ratio)]


def _sources(model_input) -> list[str]:
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        col = "source" if "source" in model_input.columns else model_input.columns[0]
        return [str(x) for x in model_input[col].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(x) for x in model_input.tolist()]
    if isinstance(model_input, Mapping) and "source" in model_input:
        return _sources(list(model_input["source"]))
    return [str(x) for x in model_input]


@contextlib.contextmanager
def _tracking(tracking_uri: str):
    """Point MLflow's fluent API at ``tracking_uri`` for the block.

    Logging and loading a model have no client-only API, so the process-global URI is
    set; a URI that was set before is restored afterwards.
    """
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    finally:
        if previous:
            mlflow.set_tracking_uri(previous)
            mlflow.set_registry_uri(previous)


def _requirements() -> list[str]:
    """Pinned runtime requirements of the served model (given, so MLflow need not infer them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    # sentencepiece: Marian and M2M100 tokenizers read their SentencePiece models with it.
    for pkg in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "sacrebleu", "pandas", "sentencepiece"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def register_policy(model_dir: str, name: str, tracking_uri: str, run_id: str | None = None,
                    tags: Mapping[str, Any] | None = None, experiment: str = "rest-registry",
                    description: str = "") -> str:
    """Log ``model_dir`` as a pyfunc model and register it as a new version of ``name``.

    The model is logged into ``run_id`` when given (e.g. the finetune step's run), else
    into a new run of ``experiment``. ``tags`` (g, i, threshold, data digests, ...) go
    on the model version, with the run id and the policy directory's digest. Returns
    the new version number as a string.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from rest.services.files import sha256_path
    from rest.model.policy import check_policy_dir
    from rest.services.tracking import get_or_create_experiment

    check_policy_dir(model_dir)
    digest = sha256_path(model_dir)
    # An unnamed string column: a plain list of sources and a one-column DataFrame both fit it.
    signature = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]))
    with _tracking(tracking_uri) as client:
        if run_id is None:
            exp_id = get_or_create_experiment(client, tracking_uri, experiment)
            run_id = client.create_run(exp_id, run_name=f"register-{name}").info.run_id
            own_run = True
        else:
            own_run = False
        with tempfile.TemporaryDirectory(prefix="rest-model-") as tmp, mlflow.start_run(run_id=run_id):
            # "Models from code": the model is this small script, not a cloudpickle of an
            # object, so loading it never unpickles code.
            script = os.path.join(tmp, "translation_model.py")
            with open(script, "w", encoding="utf-8") as f:
                f.write(_MODEL_SCRIPT)
            info = mlflow.pyfunc.log_model(
                name="policy", python_model=script, artifacts={"policy": model_dir},
                code_paths=[_REST_DIR], signature=signature, pip_requirements=_requirements())
        if own_run:
            client.set_terminated(run_id)
        version_tags = {"rest.run_id": run_id, "rest.policy_sha256": digest,
                        **{str(k): _tag_value(v) for k, v in (tags or {}).items()}}
        try:
            client.create_registered_model(name)
        except mlflow.exceptions.MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
        mv = client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=version_tags,
                                         description=description or None, model_id=info.model_id)
    log.info("registered %s version %s from %s", name, mv.version, model_dir)
    return str(mv.version)


def _tag_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _champion(client, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code) or "INVALID_PARAMETER_VALUE" in str(e.error_code):
            return None
        raise


@functools.lru_cache(maxsize=4)
def _load_version(tracking_uri: str, name: str, version: str):
    # A registered version never changes, so one process may reuse what it loaded
    # (promote translates the champion again for every candidate).
    with _tracking(tracking_uri):
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def translate(name: str, version: str, sources: Sequence[str], tracking_uri: str) -> list[str]:
    """Greedy translations of ``sources`` by registered version ``version`` of ``name``."""
    model = _load_version(tracking_uri, name, str(version))
    return [str(t) for t in model.predict(list(sources))]


def promote(name: str, candidate_version: str, test_rows: Sequence[Mapping[str, str]], tracking_uri: str,
            metric: str = "chrf", n_bootstrap: int = 1000, alpha: float = 0.05, seed: int = 12345) -> dict:
    """Move ``champion`` to the candidate only if it is significantly better on ``test_rows``.

    ``test_rows`` are ``{"id", "source", "target"}`` dicts (the fixed test set). With no
    champion yet, the candidate becomes champion. Otherwise both translate the test set;
    the candidate is promoted when its corpus score is higher and the paired bootstrap
    p-value is below ``alpha``; if not, it becomes ``challenger``. The decision and
    evidence go to the candidate version's tags and description and are returned.
    """
    if not test_rows:
        raise ValueError("promote: the test set is empty; give the fixed test split (id/source/target rows)")
    if not 0 < alpha < 1:
        raise ValueError(f"promote: alpha={alpha} must be in (0, 1), e.g. 0.05")
    candidate_version = str(candidate_version)
    sources = [r["source"] for r in test_rows]
    refs = [r["target"] for r in test_rows]
    test_digest = hashlib.sha256(json.dumps([[r.get("id"), r["source"], r["target"]] for r in test_rows],
                                            ensure_ascii=False).encode()).hexdigest()
    with _tracking(tracking_uri) as client:
        client.get_model_version(name, candidate_version)  # fails clearly if it does not exist
        champ = _champion(client, name)
    decision: dict[str, Any] = {"model": name, "candidate_version": candidate_version, "metric": metric,
                                "alpha": alpha, "test_size": len(test_rows), "test_sha256": test_digest,
                                "champion_version": champ.version if champ else None}
    cand_hyps = translate(name, candidate_version, sources, tracking_uri)
    if champ is None or str(champ.version) == candidate_version:
        stats = _paired(cand_hyps, cand_hyps, sources, refs, metric, n_bootstrap, seed)
        decision.update(candidate_score=stats["candidate_score"], champion_score=None, p_value=None,
                        candidate_ci=stats["candidate_ci"], promoted=True,
                        decision="first champion" if champ is None else "already champion",
                        reason="no champion yet" if champ is None else "candidate is the champion")
    else:
        champ_hyps = translate(name, str(champ.version), sources, tracking_uri)
        stats = _paired(champ_hyps, cand_hyps, sources, refs, metric, n_bootstrap, seed)
        better = stats["candidate_score"] > stats["baseline_score"]
        significant = stats["p_value"] < alpha
        promoted = better and significant
        if promoted:
            reason = f"higher {stats['metric']} and p={stats['p_value']:.4f} < {alpha}"
        elif not better:
            reason = f"{stats['metric']} not higher ({stats['candidate_score']:.2f} <= {stats['baseline_score']:.2f})"
        else:
            reason = f"higher {stats['metric']} but not significant (p={stats['p_value']:.4f} >= {alpha})"
        decision.update(candidate_score=stats["candidate_score"], champion_score=stats["baseline_score"],
                        candidate_ci=stats["candidate_ci"], champion_ci=stats["baseline_ci"],
                        p_value=stats["p_value"], n_bootstrap=n_bootstrap, seed=seed, promoted=promoted,
                        decision="promoted" if promoted else "challenger", reason=reason)
    with _tracking(tracking_uri) as client:
        if decision["promoted"]:
            client.set_registered_model_alias(name, CHAMPION, candidate_version)
            if champ is not None and str(champ.version) != candidate_version:
                client.set_model_version_tag(name, str(champ.version), "rest.promotion.replaced_by",
                                             candidate_version)
        else:
            client.set_registered_model_alias(name, CHALLENGER, candidate_version)
        for k, v in decision.items():
            if v is not None and k != "model":
                client.set_model_version_tag(name, candidate_version, f"rest.promotion.{k}", _tag_value(v))
        client.update_model_version(name, candidate_version, description=_describe(decision))
    log.info("promotion of %s v%s: %s (%s)", name, candidate_version, decision["decision"], decision["reason"])
    return decision


def _paired(baseline: Sequence[str], candidate: Sequence[str], sources: Sequence[str], refs: Sequence[str],
            metric: str, n_bootstrap: int, seed: int) -> dict:
    """The paired bootstrap of two systems' outputs: corpus chrF/BLEU, or a sentence-level reward
    (a verifiable reward such as ``arithmetic``: its mean in points, i.e. the accuracy in %)."""
    if metric in ("chrf", "bleu"):
        return paired_bootstrap(baseline, candidate, refs, metric, n_bootstrap, seed)
    from rest.rewards.metrics import compute, get_reward
    from rest.stats import paired_bootstrap_scores

    fn = get_reward(metric)
    return paired_bootstrap_scores(compute(fn, sources, baseline, refs), compute(fn, sources, candidate, refs),
                                   metric, n_bootstrap, seed)


def _describe(d: Mapping[str, Any]) -> str:
    text = f"Promotion decision: {d['decision']} ({d['reason']}). Test set: {d['test_size']} sentences, " \
           f"sha256 {d['test_sha256'][:12]}. Candidate {d['metric']} {d['candidate_score']:.2f}"
    if d.get("champion_score") is not None:
        text += (f" ± {d['candidate_ci']:.2f} vs champion v{d['champion_version']} {d['champion_score']:.2f}"
                 f" ± {d['champion_ci']:.2f}; paired bootstrap p = {d['p_value']:.4f} (alpha {d['alpha']},"
                 f" {d['n_bootstrap']} resamples).")
    else:
        text += "."
    return text
