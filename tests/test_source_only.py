"""Source-only Grow: text without references joins the Grow set and needs a reference-free reward."""
import json

import pytest

from rest.config import DataConfig, SampleConfig, ScoreConfig, load_config
from rest.steps.data import DataError, load_sources, prepare
from rest.services.files import read_jsonl


def _cfg(tiny_data, sources, **kw):
    return DataConfig(train=tiny_data["train"], valid=tiny_data["valid"], test=tiny_data["test"], sources=sources,
                      **{"grow_sources": 20, **kw})


def test_sources_in_three_formats(tmp_path):
    txt = tmp_path / "s.txt"
    txt.write_text("Erster Satz.\n\n  Zweiter   Satz. \n", encoding="utf-8")
    tsv = tmp_path / "s.tsv"
    tsv.write_text("id\tde\nx1\tEin Satz.\nx2\tNoch einer.\n", encoding="utf-8")
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text(json.dumps({"de": "Hallo Welt."}) + "\n", encoding="utf-8")
    cfg = DataConfig()
    assert [r["source"] for r in load_sources(str(txt), cfg)] == ["Erster Satz.", "Zweiter Satz."]
    assert [(r["id"], r["target"]) for r in load_sources(str(tsv), cfg)] == [("x1", ""), ("x2", "")]
    assert load_sources(str(jsonl), cfg)[0]["id"] == "s.jsonl:1"


@pytest.mark.parametrize("name, text, message", [
    ("empty.txt", "\n\n", "no source sentences"),
    ("nocol.tsv", "id\ten\n1\tHello\n", "no column 'de'"),
    ("dup.tsv", "id\tde\na\tEins.\na\tZwei.\n", "already used"),
    ("long.txt", "Wort " * 300 + "\n", "data.max_words"),
    ("bad.jsonl", "{not json\n", "not valid JSON"),
])
def test_bad_sources_are_clear_errors(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_sources(str(p), DataConfig())


def test_prepare_adds_sources_to_grow_and_keeps_test_sources_out(tmp_path, tiny_data):
    test_source = next(read_jsonl_tsv(tiny_data["test"]))
    src = tmp_path / "mono.txt"
    src.write_text("Ein neuer Satz ohne Übersetzung.\nNoch ein Satz.\n" + test_source + "\n", encoding="utf-8")
    data = prepare(_cfg(tiny_data, str(src)), str(tmp_path / "data"))
    grow = list(read_jsonl(data.grow))
    only = [r for r in grow if not r["target"]]
    assert [r["source"] for r in only] == ["Ein neuer Satz ohne Übersetzung.", "Noch ein Satz."]
    assert len(grow) == 22 and data.stats["grow"]["source_only_rows"] == 2
    # max_sources picks a seeded subset
    data = prepare(_cfg(tiny_data, str(src), max_sources=1), str(tmp_path / "data2"))
    assert data.stats["grow"]["source_only_rows"] == 1


def read_jsonl_tsv(path):
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            yield line.rstrip("\n").split("\t")[1]


@pytest.fixture(scope="module")
def grown_with_sources(tmp_path_factory, tiny_data, tiny_policy):
    from rest.steps.sample import grow

    d = tmp_path_factory.mktemp("so")
    src = d / "mono.txt"
    src.write_text("Ein neuer Satz ohne Übersetzung.\nNoch ein Satz.\n", encoding="utf-8")
    data = prepare(_cfg(tiny_data, str(src), grow_sources=6), str(d / "data"))
    grow(tiny_policy, data.grow, SampleConfig(num_samples=2, threads=1, backend="hf"), str(d / "grown"), 1)
    return {"data": data, "grown": str(d / "grown"), "dir": d}


def test_grow_samples_source_only_text_without_references(grown_with_sources):
    rows = list(read_jsonl(grown_with_sources["grown"] + "/data.jsonl"))
    only = [r for r in rows if r["reference"] is None]
    assert len(only) == 4 and all(r["origin"] == "sample" for r in only)  # 2 sources x 2 samples, no reference row
    assert sum(r["origin"] == "reference" for r in rows) == 6


def test_reference_based_reward_refuses_source_only_rows(grown_with_sources, tmp_path):
    from rest.steps.score import score

    out = tmp_path / "scored"
    with pytest.raises(ValueError, match="source-only text.*reference-free reward"):
        score(grown_with_sources["grown"], ScoreConfig(reward="chrf"), str(out))
    assert not (out / "data.jsonl").exists()


def test_reference_free_reward_scores_every_row(grown_with_sources, tmp_path):
    from rest.steps.score import score

    stats = score(grown_with_sources["grown"], ScoreConfig(reward="hacking_rewards:length", allow_code_reward=True),
                  str(tmp_path / "scored"))
    assert stats["rows"] == 22 and stats["count_by_origin"]["source_only"] == 4


def test_control_trains_on_references_only(grown_with_sources, tiny_policy, tmp_path):
    from rest.config import FinetuneConfig
    from rest.steps.finetune import control

    info = control(tiny_policy, grown_with_sources["data"].grow, grown_with_sources["data"].valid,
                   FinetuneConfig(batch_tokens=256, threads=1), 2, str(tmp_path / "c"))
    assert info["train_rows"] == 6


def test_validate_refuses_sources_with_a_reference_based_reward(tmp_path, tiny_data):
    from rest.steps.validate import ValidationError, validate_run

    src = tmp_path / "mono.txt"
    src.write_text("Ein Satz.\n", encoding="utf-8")
    cfg = load_config(None, {"data.sources": str(src)})
    with pytest.raises(ValidationError, match="data.sources.*reward_model"):
        validate_run(cfg.to_dict(), train=tiny_data["train"], valid=tiny_data["valid"], test=tiny_data["test"],
                     check_data=False)
    cfg = load_config(None, {"data.sources": str(tmp_path / "missing.txt"), "score.reward": "hacking_rewards:length",
                             "score.allow_code_reward": "true"})
    with pytest.raises(DataError, match="missing.txt: file not found"):
        validate_run(cfg.to_dict(), train=tiny_data["train"], valid=tiny_data["valid"], test=tiny_data["test"])
