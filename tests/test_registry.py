"""rest.services.registry: register policies in a real MLflow server and promote only a better one."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from rest.services import registry
from rest_kfp.cli import promote_cli
from tests.conftest import bundled_rows
from tests.servers import mlflow_server, s3_server  # noqa: F401  (fixtures)


# -- pure parts: no server ----------------------------------------------------------------------

def test_sources_accepts_lists_series_and_frames():
    assert registry._sources(["a", "b"]) == ["a", "b"]
    assert registry._sources("a") == ["a"]
    assert registry._sources(pd.Series(["x"])) == ["x"]
    assert registry._sources(pd.DataFrame({"id": [1], "source": ["s"]})) == ["s"]
    assert registry._sources(pd.DataFrame({"text": ["t"]})) == ["t"]
    assert registry._sources({"source": ["q"]}) == ["q"]


def test_paired_bootstrap_direction_and_significance():
    refs = [f"the quick brown fox number {k} jumps over the lazy dog" for k in range(30)]
    good = list(refs)
    bad = [r.replace("quick brown", "slow green").replace("lazy", "busy") for r in refs]
    s = registry.paired_bootstrap(bad, good, refs, "chrf", n_bootstrap=200, seed=1)
    assert s["candidate_score"] > s["baseline_score"] and s["p_value"] < 0.05
    assert s["candidate_ci"] >= 0 and s["metric"].startswith("chrF")
    same = registry.paired_bootstrap(good, good, refs, "chrf", n_bootstrap=200, seed=1)
    assert same["candidate_score"] == same["baseline_score"]  # promote() then refuses: not higher
    again = registry.paired_bootstrap(bad, good, refs, "chrf", n_bootstrap=200, seed=1)
    assert again == s  # seeded: the evidence is reproducible
    with pytest.raises(ValueError, match="chrf or bleu"):
        registry.paired_bootstrap(bad, good, refs, "ter")


# -- against the MLflow server ------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_policies(tiny_policy, tmp_path_factory):
    """Two policies whose outputs differ, and a test set on which the second is perfect.

    Untrained tiny models emit end-of-sequence at once (empty translations). The second
    policy is a differently seeded model that must write at least 8 tokens, and the test
    references are its own greedy outputs: it scores chrF 100, the first scores 0.
    Training a model to be measurably better would take minutes on 2 cores.
    """
    from rest.model.policy import build_model, generate, load_policy, save_policy

    _, tok = load_policy(tiny_policy)
    model = build_model(tok, d_model=32, ffn_dim=64, layers=1, heads=2, dropout=0.0, seed=1)
    model.generation_config.min_new_tokens = 8
    better = str(tmp_path_factory.mktemp("better") / "policy")
    save_policy(model, tok, better, {"kind": "test-better"})
    sources = [r[1] for r in bundled_rows("test", 16)]
    m, t = load_policy(better)
    refs = [h[0] for h in generate(m, t, sources)]
    m0, t0 = load_policy(tiny_policy)
    worse_out = [h[0] for h in generate(m0, t0, sources)]
    assert all(refs) and refs != worse_out
    rows = [{"id": f"t{k}", "source": s, "target": r} for k, (s, r) in enumerate(zip(sources, refs))]
    return {"worse": tiny_policy, "better": better, "rows": rows, "worse_out": worse_out}


@pytest.mark.integration
def test_register_and_promote_only_when_better(mlflow_server, two_policies, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    uri, name = mlflow_server.url, "rest-test-policy"
    rows = two_policies["rows"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    v1 = registry.register_policy(two_policies["worse"], name, uri,
                                  tags={"g": 0, "i": 0, "threshold": None, "data.test.sha256": "ab" * 32})
    first = registry.promote(name, v1, rows, uri, n_bootstrap=200, seed=7)
    assert first["decision"] == "first champion" and first["promoted"]
    assert client.get_model_version_by_alias(name, "champion").version == v1
    mv = client.get_model_version(name, v1)
    assert mv.tags["g"] == "0" and mv.tags["data.test.sha256"] == "ab" * 32 and mv.tags["rest.run_id"]
    assert mv.tags["rest.promotion.decision"] == "first champion"

    # Load by alias, as a serving job would, and translate.
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = served.predict(pd.DataFrame({"source": [rows[0]["source"]]}))
    assert list(out) == [two_policies["worse_out"][0]]

    # The same policy again: not better, so champion stays and the new version is challenger.
    v2 = registry.register_policy(two_policies["worse"], name, uri, tags={"g": 1, "i": 1, "threshold": 0.5})
    same = registry.promote(name, v2, rows, uri, n_bootstrap=200, seed=7)
    assert same["decision"] == "challenger" and not same["promoted"] and "not higher" in same["reason"]
    assert client.get_model_version_by_alias(name, "champion").version == v1
    assert client.get_model_version_by_alias(name, "challenger").version == v2
    assert "not higher" in client.get_model_version(name, v2).description

    # A better policy: champion moves, with the evidence recorded on the version.
    with mlflow.start_run() as run:  # registering into a given (step) run
        pass
    v3 = registry.register_policy(two_policies["better"], name, uri, run_id=run.info.run_id,
                                  tags={"g": 1, "i": 2, "threshold": 0.6})
    better = registry.promote(name, v3, rows, uri, n_bootstrap=200, seed=7)
    assert better["decision"] == "promoted" and better["promoted"]
    assert better["candidate_score"] == pytest.approx(100.0) and better["champion_score"] < 10
    assert better["p_value"] < 0.05 and better["champion_version"] == v1
    assert client.get_model_version_by_alias(name, "champion").version == v3
    tags = client.get_model_version(name, v3).tags
    assert tags["rest.run_id"] == run.info.run_id and tags["threshold"] == "0.6"
    assert float(tags["rest.promotion.p_value"]) < 0.05 and tags["rest.promotion.decision"] == "promoted"
    assert client.get_model_version(name, v1).tags["rest.promotion.replaced_by"] == v3
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    # The whole set at once: this model never stops by itself, so its output length
    # depends on the batch (generate's length limit), as when the references were made.
    assert served.predict([r["source"] for r in rows]) == [r["target"] for r in rows]

    # The CLI the pipeline calls: the champion itself is "already champion".
    test_path = tmp_path / "test.jsonl"
    test_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out_path = tmp_path / "decision.json"
    assert promote_cli(["--model-name", name, "--version", v3, "--test", str(test_path),
                                 "--tracking-uri", uri, "--n-bootstrap", "100", "--output", str(out_path)]) == 0
    assert json.loads(out_path.read_text())["decision"] == "already champion"
    assert not os.environ.get("SACREBLEU_SEED")  # the seed override did not leak
