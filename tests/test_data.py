import json

import pytest

from rest.config import DataConfig
from rest.data import DataError, load_pairs, prepare
from rest.io import read_jsonl
from tests.conftest import write_tsv



def cfg(**kw):
    base = dict(train="x", valid="", test="")
    base.update(kw)
    return DataConfig(**base)


def test_tsv_and_jsonl_load_the_same_rows(tmp_path):
    rows = [("a", "Hallo Welt", "Hello world"), ("b", "Guten Tag", "Good day")]
    tsv = write_tsv(tmp_path / "d.tsv", rows)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "de": d, "en": e}) + "\n" for i, d, e in rows))
    assert load_pairs(tsv, cfg()) == load_pairs(str(jsonl), cfg())
    assert load_pairs(tsv, cfg())[0] == {"id": "a", "source": "Hallo Welt", "target": "Hello world"}


def test_custom_columns(tmp_path):
    p = write_tsv(tmp_path / "d.tsv", [("Bonjour", "Hallo")], header=("fr", "de"))
    rows = load_pairs(p, cfg(source_column="fr", target_column="de"))
    assert rows[0]["source"] == "Bonjour" and rows[0]["id"] == "d.tsv:2"


@pytest.mark.parametrize("content, message", [
    ("id\tde\ten\na\tHallo\n", r"d.tsv:2: 2 tab-separated fields"),
    ("id\tfr\ten\na\tSalut\tHi\n", r"d.tsv:1: header .* has no column 'de'"),
    ("id\tde\ten\na\t\tHi\n", r"d.tsv:2: empty source"),
    ("id\tde\ten\na\tHallo\t\n", r"d.tsv:2: empty target"),
    ("id\tde\ten\na\tHallo\tHi\na\tWelt\tWorld\n", r"d.tsv:3: id 'a' already used on line 2"),
    ("id\tde\ten\n", r"no data rows"),
    ("", r"empty file"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, message):
    p = tmp_path / "d.tsv"
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        load_pairs(str(p), cfg())


def test_bad_encoding_names_the_line(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_bytes(b"id\tde\ten\na\tHallo\tHi\nb\t\xff\xfe\tX\n")
    with pytest.raises(DataError, match=r"d.tsv:3: not UTF-8"):
        load_pairs(str(p), cfg())


def test_split_is_deterministic_and_disjoint(tmp_path):
    rows = [(f"r{k}", f"Satz Nummer {k}", f"Sentence number {k}") for k in range(400)]
    train = write_tsv(tmp_path / "t.tsv", rows)
    a = prepare(cfg(train=train, grow_sources=50), str(tmp_path / "a"))
    b = prepare(cfg(train=train, grow_sources=50), str(tmp_path / "b"))
    assert a.stats == b.stats
    ids = {name: {r["id"] for r in read_jsonl(getattr(a, name))} for name in ("train", "valid", "test", "grow")}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["valid"] and not ids["valid"] & ids["test"]
    assert ids["grow"] <= ids["train"] and len(ids["grow"]) == 50
    assert sum(len(v) for k, v in ids.items() if k != "grow") == 400
