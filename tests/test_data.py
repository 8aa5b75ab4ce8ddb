import json

import pytest

from rest.config import DataConfig
from rest.steps.data import DataError, load_pairs, prepare
from rest.services.files import read_jsonl
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


# -- over-long rows: skipped, counted and reported by default; an error when asked ----------------

LONG = " ".join(f"Wort{k}" for k in range(201))


def test_overlong_rows_are_skipped_counted_and_reported(tmp_path, caplog):
    rows = [(f"r{k}", f"Satz Nummer {k}", f"Sentence number {k}") for k in range(40)]
    rows[5] = ("r5", LONG, "long")
    rows[9] = ("r9", "kurz", "x" * 7000)  # few words but 7000 characters
    train = write_tsv(tmp_path / "train.tsv", rows)
    valid = write_tsv(tmp_path / "valid.tsv", [("v1", "Hallo", "Hello"), ("v2", LONG, "long")])
    test = write_tsv(tmp_path / "test.tsv", [("t1", "Welt", "World")])
    with caplog.at_level("WARNING", logger="rest.steps.data"):
        out = prepare(cfg(train=train, valid=valid, test=test), str(tmp_path / "out"))
    train_ids = {r["id"] for r in read_jsonl(out.train)}
    assert len(train_ids) == 38 and not {"r5", "r9"} & train_ids
    assert out.stats["train"]["overlong_skipped"] == 2 and out.stats["valid"]["overlong_skipped"] == 1
    assert out.stats["test"]["overlong_skipped"] == 0 and out.stats["valid"]["rows"] == 1
    assert out.skipped.count == 3
    assert out.stats["overlong"] == {"action": "skip", "skipped": 3, "examples": [
        f"{train}:7: 'de' has 201 words, over data.max_words=200",
        f"{train}:11: 'en' has 7000 characters, over 30 x data.max_words=200; it is not a sentence",
        f"{valid}:3: 'de' has 201 words, over data.max_words=200"]}
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["overlong"]["skipped"] == 3
    logged = caplog.text
    assert f"{train}: skipped 2 over-long rows" in logged and f"{train}:7: 'de' has 201 words" in logged
    assert "3 over-long rows skipped in all" in logged


def test_overlong_error_setting_names_file_and_line(tmp_path):
    p = write_tsv(tmp_path / "d.tsv", [("a", "Hallo", "Hi"), ("b", LONG, "long")])
    with pytest.raises(DataError, match=r"d\.tsv:3: 'de' has 201 words, over data\.max_words=200; split it or "
                                        r"raise the limit, or set data\.overlong=skip"):
        load_pairs(p, cfg(overlong="error"))
    with pytest.raises(ValueError, match=r"data\.overlong: is 'drop'; use skip .* or error"):
        cfg(overlong="drop")


def test_only_overlong_rows_is_an_error_that_says_so(tmp_path):
    p = write_tsv(tmp_path / "d.tsv", [("b", LONG, "long")])
    with pytest.raises(DataError, match=r"d\.tsv: no data rows.*\(1 over-long rows skipped: .*d\.tsv:2: 'de' has 201"):
        load_pairs(p, cfg())


def test_malformed_rows_stay_errors_when_skipping(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("id\tde\ten\na\tHallo\tHi\nb\t" + LONG + "\tlong\nc\tHallo\n")
    with pytest.raises(DataError, match=r"d\.tsv:4: 2 tab-separated fields"):
        load_pairs(str(p), cfg(overlong="skip"))


def test_gigantic_line_is_never_read_whole(tmp_path):
    import tracemalloc

    from rest.steps.data import line_byte_cap

    cap = line_byte_cap(cfg())
    p = tmp_path / "d.tsv"
    with open(p, "w", encoding="utf-8") as f:
        f.write("id\tde\ten\na\tHallo\tHi\n")
        f.write("b\t" + "x" * (8 * cap) + "\tbig\n")  # 8 MiB on one line
        f.write("c\tWelt\tWorld\n")
    tracemalloc.start()
    try:
        rows = load_pairs(str(p), cfg())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r["id"] for r in rows] == ["a", "c"]
    assert peak < 3 * cap, f"peak {peak} bytes: the long line was read whole"
    with pytest.raises(DataError, match=rf"d\.tsv:3: line of {8 * cap + 7} bytes, over the {cap}-byte cap; split it"):
        load_pairs(str(p), cfg(overlong="error"))


def test_duplicate_header_column_is_an_error(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("id\tde\ten\tde\na\tHallo\tHi\tServus\n")
    with pytest.raises(DataError, match=r"d\.tsv:1: column 'de' appears 2 times in the header "
                                        r"\['id', 'de', 'en', 'de'\]; rename or remove the extra one"):
        load_pairs(str(p), cfg())
    j = tmp_path / "d.jsonl"
    j.write_text('{"de": "Hallo", "en": "Hi", "de": "Servus"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: key 'de' appears twice in one object"):
        load_pairs(str(j), cfg())
