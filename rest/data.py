"""Parallel data: load TSV/JSONL from a path or URI, check every row, split by seed.

Every split is normalised to JSONL rows ``{"id", "source", "target"}``; later steps read
only that form.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import tempfile
from dataclasses import dataclass

from .config import DataConfig
from .io import read_jsonl, sha256_file, write_json, write_jsonl

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Malformed data: the message names the file, the line and the fix."""


MAX_CHARS_PER_WORD = 30   # a row longer than max_words x this many characters is rejected
SAME_TEXT_SHARE = 0.5     # more rows than this with source == target: both columns hold one language
LANGUAGE_CHECK_ROWS = 1000


def resolve_uri(uri: str, workdir: str | None = None) -> str:
    """A local path for ``uri``: local paths pass through, s3:// objects are fetched."""
    if uri.startswith("s3://"):
        from . import storage  # only needed for object-store data

        workdir = workdir or tempfile.mkdtemp(prefix="rest-data-")
        return storage.fetch_to_local(uri, workdir)
    if "://" in uri:
        raise DataError(f"{uri}: unsupported URI scheme; use a local path or s3://bucket/key")
    if not os.path.exists(uri):
        raise DataError(f"{uri}: file not found")
    return uri


def _lines(path: str):
    """Yield (line number, text); a line that is not UTF-8 is a DataError naming that line."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            # Decode line by line (not through a text wrapper, which decodes ahead in blocks)
            # so a bad byte is reported on its own line.
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start}); "
                                    "re-encode the file as UTF-8") from None
                if lineno == 1:
                    line = line.removeprefix("\ufeff")  # a BOM is not part of the header
                yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _format_of(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith(".tsv") or name.endswith(".txt"):
        return "tsv"
    if name.endswith(".jsonl") or name.endswith(".json"):
        return "jsonl"
    raise DataError(f"{path}: unknown format; name the file *.tsv or *.jsonl (optionally .gz)")


def _raw_rows(path: str, cfg: DataConfig, require_target: bool = True):
    """Yield (line, id or None, source, target) with per-row structural checks.

    With ``require_target=False`` (source-only text) the target column may be absent.
    """
    src_col, tgt_col, id_col = cfg.source_column, cfg.target_column, cfg.id_column
    if _format_of(path) == "tsv":
        lines = _lines(path)
        first = next(lines, None)
        if first is None:
            raise DataError(f"{path}: empty file; it needs a header row naming the columns, e.g. '{src_col}\\t{tgt_col}'")
        header = first[1].split("\t")
        for col in (src_col, tgt_col) if require_target else (src_col,):
            if col not in header:
                raise DataError(f"{path}:1: header {header} has no column {col!r}; "
                                f"set data.source_column/data.target_column to the header's names")
        i_src = header.index(src_col)
        i_tgt = header.index(tgt_col) if tgt_col in header else None
        i_id = header.index(id_col) if id_col in header else None
        for lineno, line in lines:
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != len(header):
                raise DataError(f"{path}:{lineno}: {len(parts)} tab-separated fields, the header has "
                                f"{len(header)}; remove stray tabs or fill missing fields")
            yield lineno, (parts[i_id] if i_id is not None else None), parts[i_src], \
                (parts[i_tgt] if i_tgt is not None else "")
    else:
        for lineno, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line")
            for col in (src_col, tgt_col) if require_target else (src_col,):
                if col not in obj:
                    raise DataError(f"{path}:{lineno}: no key {col!r} (keys: {sorted(obj)}); "
                                    f"set data.source_column/data.target_column")
                if not isinstance(obj[col], str):
                    raise DataError(f"{path}:{lineno}: {col!r} must be a string")
            rid = obj.get(id_col)
            yield lineno, (str(rid) if rid is not None else None), obj[src_col], obj.get(tgt_col, "")


def load_pairs(uri: str, cfg: DataConfig, require_target: bool = True) -> list[dict]:
    """Load and check parallel data; rows are ``{"id", "source", "target"}``.

    Rejects empty text, over-long rows and duplicated ids with the file and line.
    """
    return _checked_rows(uri, _raw_rows(resolve_uri(uri), cfg, require_target), cfg, require_target,
                         "no data rows; the file holds only a header or blank lines")


def load_sources(uri: str, cfg: DataConfig) -> list[dict]:
    """Load source-only text (no references); rows are ``{"id", "source", "target": ""}``.

    A ``.txt`` file holds one sentence per line; TSV/JSONL files need only the source
    column. Empty lines are skipped; over-long rows and duplicated ids are errors.
    """
    path = resolve_uri(uri)
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith(".txt"):
        raw = ((lineno, None, line, "") for lineno, line in _lines(path))
    else:
        # The same readers as parallel data, with the target column optional (and ignored).
        raw = ((lineno, rid, src, "") for lineno, rid, src, _ in _raw_rows(path, cfg, require_target=False))
    return _checked_rows(uri, (r for r in raw if r[2].strip()), cfg, False,
                         "no source sentences; data.sources needs one sentence per line (.txt) "
                         f"or a {cfg.source_column!r} column (TSV/JSONL)")


def _checked_rows(uri: str, raw, cfg: DataConfig, require_target: bool, if_empty: str) -> list[dict]:
    """Normalise whitespace and check every (line, id, source, target): empty text, length, unique ids."""
    base = os.path.basename(uri)
    rows, seen = [], {}
    for lineno, rid, src, tgt in raw:
        src, tgt = " ".join(src.split()), " ".join(tgt.split())
        if not src:
            raise DataError(f"{uri}:{lineno}: empty source text in column {cfg.source_column!r}")
        if require_target and not tgt:
            raise DataError(f"{uri}:{lineno}: empty target text in column {cfg.target_column!r}")
        for text, col in ((src, cfg.source_column), (tgt, cfg.target_column)):
            if len(text.split()) > cfg.max_words:
                raise DataError(f"{uri}:{lineno}: {col!r} has {len(text.split())} words, over "
                                f"data.max_words={cfg.max_words}; split it or raise the limit")
            # Few words but a huge text (a pasted blob, a missing newline) is just as absurd.
            if len(text) > cfg.max_words * MAX_CHARS_PER_WORD:
                raise DataError(f"{uri}:{lineno}: {col!r} has {len(text)} characters, over "
                                f"{MAX_CHARS_PER_WORD} x data.max_words={cfg.max_words}; it is not a sentence: "
                                "remove the row or raise data.max_words")
        rid = rid if rid else f"{base}:{lineno}"
        if rid in seen:
            raise DataError(f"{uri}:{lineno}: id {rid!r} already used on line {seen[rid]}; ids must be unique")
        seen[rid] = lineno
        rows.append({"id": rid, "source": src, "target": tgt})
    if not rows:
        raise DataError(f"{uri}: {if_empty}")
    return rows


def check_languages(rows: list[dict], uri: str, cfg: DataConfig) -> None:
    """Refuse data whose source and target hold the same text in most rows (one language twice)."""
    head = rows[:LANGUAGE_CHECK_ROWS]
    same = sum(1 for r in head if r["source"] == r["target"])
    if head and same > SAME_TEXT_SHARE * len(head):
        raise DataError(f"{uri}: source equals target in {same} of the first {len(head)} rows; columns "
                        f"{cfg.source_column!r} and {cfg.target_column!r} hold the same language: point "
                        "data.source_column/data.target_column at the two languages")


def _stable_fraction(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_counts(rows: list[dict], cfg: DataConfig) -> tuple[int, int]:
    """How many rows ``prepare`` would split off train as (valid, test) when those files are not given."""
    n_valid = n_test = 0
    for row in rows:
        u = _stable_fraction(row["id"], cfg.seed)
        if not cfg.test and u < cfg.test_fraction:
            n_test += 1
        elif not cfg.valid and u > 1 - cfg.valid_fraction:
            n_valid += 1
    return n_valid, n_test


@dataclass
class PreparedData:
    train: str
    valid: str
    test: str
    grow: str
    stats: dict


def prepare(cfg: DataConfig, out_dir: str) -> PreparedData:
    """Load, check and split the data; write train/valid/test/grow JSONL into ``out_dir``.

    ``grow`` is the subset of train that each Grow step samples for (``grow_sources``).
    Splits taken from train are chosen by a hash of (seed, id), so they do not depend on
    row order.
    """
    train = load_pairs(cfg.train, cfg)
    valid = load_pairs(cfg.valid, cfg) if cfg.valid else None
    test = load_pairs(cfg.test, cfg) if cfg.test else None
    if valid is None or test is None:
        keep = []
        split_valid, split_test = [], []
        for row in train:
            u = _stable_fraction(row["id"], cfg.seed)
            if test is None and u < cfg.test_fraction:
                split_test.append(row)
            elif valid is None and u > 1 - cfg.valid_fraction:
                split_valid.append(row)
            else:
                keep.append(row)
        train, valid, test = keep, valid if valid is not None else split_valid, test if test is not None else split_test
        if not valid or not test:
            raise DataError(f"{cfg.train}: too few rows ({len(keep)}) to split off valid/test; "
                            "give data.valid and data.test files")
    check_languages(train, cfg.train, cfg)
    rng = random.Random(cfg.seed)
    valid = _subset(valid, cfg.max_valid, rng)
    test = _subset(test, cfg.max_test, rng)
    grow = _subset(train, cfg.grow_sources, rng)
    if cfg.sources:
        # Source-only text joins the Grow set with an empty target: it has no reference, so
        # only a reference-free reward can score its samples (checked by the score step).
        held_out = {r["source"] for r in valid} | {r["source"] for r in test}
        loaded = load_sources(cfg.sources, cfg)
        extra = [r for r in loaded if r["source"] not in held_out]
        if len(extra) < len(loaded):  # sampling for test sources would leak them into training
            log.info("data.sources: dropped %d sentences that are valid/test sources", len(loaded) - len(extra))
        ids = {r["id"] for r in grow}
        clash = next((r["id"] for r in extra if r["id"] in ids), None)
        if clash is not None:
            raise DataError(f"{cfg.sources}: id {clash!r} is also a training row's id; give the source-only "
                            "rows their own ids")
        grow = grow + _subset(extra, cfg.max_sources, random.Random(cfg.seed + 1))
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, rows in (("train", train), ("valid", valid), ("test", test), ("grow", grow)):
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        write_jsonl(paths[name], rows)
    stats = {name: {"rows": len(rows), "sha256": sha256_file(paths[name])}
             for name, rows in (("train", train), ("valid", valid), ("test", test), ("grow", grow))}
    stats["grow"]["source_only_rows"] = sum(1 for r in grow if not r["target"])
    write_json(os.path.join(out_dir, "stats.json"), stats)
    log.info("data: %s", {k: v["rows"] for k, v in stats.items()})
    return PreparedData(**paths, stats=stats)


def _subset(rows: list[dict], limit: int, rng: random.Random) -> list[dict]:
    if not limit or limit >= len(rows):
        return list(rows)
    picked = sorted(rng.sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def read_rows(path: str) -> list[dict]:
    """Read a normalised JSONL split."""
    return list(read_jsonl(path))
