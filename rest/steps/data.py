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
from dataclasses import dataclass, field

from rest.config import DataConfig
from rest.services.files import read_json, read_jsonl, sha256_file, write_json, write_jsonl

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Malformed data: the message names the file, the line and the fix."""


MAX_CHARS_PER_WORD = 30   # a row longer than max_words x this many characters is over-long
MIN_LINE_BYTES = 1 << 20  # a line is never read whole past this many bytes (or the cap below, if larger)
SKIPPED_EXAMPLES = 5      # over-long rows named in the log and the step's metadata
SAME_TEXT_SHARE = 0.5     # more rows than this with source == target: both columns hold one language
LANGUAGE_CHECK_ROWS = 1000


def resolve_uri(uri: str, workdir: str | None = None) -> str:
    """A local path for ``uri``: local paths pass through, s3:// objects are fetched."""
    if uri.startswith("s3://"):
        from rest.services import storage  # only needed for object-store data

        workdir = workdir or tempfile.mkdtemp(prefix="rest-data-")
        return storage.fetch_to_local(uri, workdir)
    if "://" in uri:
        raise DataError(f"{uri}: unsupported URI scheme; use a local path or s3://bucket/key")
    if not os.path.exists(uri):
        raise DataError(f"{uri}: file not found")
    return uri


@dataclass
class Skipped:
    """Over-long rows left out under ``data.overlong=skip``: a count and the first few ``file:line: why``."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        self.count += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            self.examples.append(f"{where}: {why}")

    def extend(self, other: "Skipped") -> None:
        self.count += other.count
        self.examples = (self.examples + other.examples)[:SKIPPED_EXAMPLES]

    def describe(self) -> str:
        more = f", ... ({self.count - len(self.examples)} more)" if self.count > len(self.examples) else ""
        return "; ".join(self.examples) + more


class LineTooLong:
    """Stands for a line over the byte cap, which was skipped over without being held in memory."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def line_byte_cap(cfg: DataConfig) -> int:
    """The longest line read whole: room for several columns at the character limit, in UTF-8."""
    return max(MIN_LINE_BYTES, 16 * cfg.max_words * MAX_CHARS_PER_WORD)


def _overlong(cfg: DataConfig, skipped: Skipped, where: str, why: str, fix: str) -> None:
    """An over-long row: an error under ``data.overlong=error``, else counted in ``skipped``."""
    if cfg.overlong == "error":
        raise DataError(f"{where}: {why}; {fix}, or set data.overlong=skip to drop such rows")
    skipped.add(where, why)


def _lines(path: str, max_bytes: int = 0):
    """Yield (line number, text); a line that is not UTF-8 is a DataError naming that line.

    With ``max_bytes``, a longer line is read in bounded pieces and thrown away, never held
    whole: it yields a :class:`LineTooLong` in place of its text.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            # Decode line by line (not through a text wrapper, which decodes ahead in blocks)
            # so a bad byte is reported on its own line.
            lineno = 0
            while True:
                raw = f.readline(max_bytes + 1) if max_bytes else f.readline()
                if not raw:
                    break
                lineno += 1
                if max_bytes and len(raw) > max_bytes and not raw.endswith(b"\n"):
                    nbytes = len(raw)
                    while raw and not raw.endswith(b"\n"):  # skip to the line's end, piece by piece
                        raw = f.readline(1 << 16)
                        nbytes += len(raw)
                    yield lineno, LineTooLong(nbytes)
                    continue
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


def _long_lines(path: str, lines, cfg: DataConfig, skipped: Skipped):
    """``lines`` without the ones over the byte cap (each one an over-long row)."""
    for lineno, line in lines:
        if isinstance(line, LineTooLong):
            _overlong(cfg, skipped, f"{path}:{lineno}", f"line of {line.nbytes} bytes, over the "
                      f"{line_byte_cap(cfg)}-byte cap", "split it into sentences or raise data.max_words")
            continue
        yield lineno, line


def _no_duplicate_keys(path: str, lineno: int):
    def hook(pairs):
        keys = [k for k, _ in pairs]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise DataError(f"{path}:{lineno}: key {dup!r} appears twice in one object; keep one")
        return dict(pairs)
    return hook


def _raw_rows(path: str, cfg: DataConfig, require_target: bool = True, skipped: Skipped | None = None):
    """Yield (line, id or None, source, target) with per-row structural checks.

    With ``require_target=False`` (source-only text) the target column may be absent.
    Lines over the byte cap are over-long rows (skipped into ``skipped``, or an error).
    """
    src_col, tgt_col, id_col = cfg.source_column, cfg.target_column, cfg.id_column
    skipped = skipped if skipped is not None else Skipped()
    if _format_of(path) == "tsv":
        lines = _lines(path, line_byte_cap(cfg))
        first = next(lines, None)
        if first is None:
            raise DataError(f"{path}: empty file; it needs a header row naming the columns, e.g. '{src_col}\\t{tgt_col}'")
        if isinstance(first[1], LineTooLong):
            raise DataError(f"{path}:1: the header line has {first[1].nbytes} bytes; it must name the columns, "
                            f"e.g. '{src_col}\\t{tgt_col}'")
        header = first[1].split("\t")
        dup = next((c for c in header if header.count(c) > 1), None)
        if dup is not None:
            # index() would silently read the first of them.
            raise DataError(f"{path}:1: column {dup!r} appears {header.count(dup)} times in the header "
                            f"{header}; rename or remove the extra one")
        for col in (src_col, tgt_col) if require_target else (src_col,):
            if col not in header:
                raise DataError(f"{path}:1: header {header} has no column {col!r}; "
                                f"set data.source_column/data.target_column to the header's names")
        i_src = header.index(src_col)
        i_tgt = header.index(tgt_col) if tgt_col in header else None
        i_id = header.index(id_col) if id_col in header else None
        for lineno, line in _long_lines(path, lines, cfg, skipped):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != len(header):
                raise DataError(f"{path}:{lineno}: {len(parts)} tab-separated fields, the header has "
                                f"{len(header)}; remove stray tabs or fill missing fields")
            yield lineno, (parts[i_id] if i_id is not None else None), parts[i_src], \
                (parts[i_tgt] if i_tgt is not None else "")
    else:
        for lineno, line in _long_lines(path, _lines(path, line_byte_cap(cfg)), cfg, skipped):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_no_duplicate_keys(path, lineno))
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


def load_pairs(uri: str, cfg: DataConfig, require_target: bool = True, skipped: Skipped | None = None) -> list[dict]:
    """Load and check parallel data; rows are ``{"id", "source", "target"}``.

    Rejects empty text, malformed rows and duplicated ids with the file and line. Over-long
    rows (``data.max_words``, the line byte cap) are skipped and counted into ``skipped``
    (and logged), or rejected under ``data.overlong=error``.
    """
    mine = Skipped()
    rows = _checked_rows(uri, _raw_rows(resolve_uri(uri), cfg, require_target, mine), cfg, require_target,
                         "no data rows; the file holds only a header or blank lines", mine)
    if skipped is not None:
        skipped.extend(mine)
    return rows


def load_sources(uri: str, cfg: DataConfig, skipped: Skipped | None = None) -> list[dict]:
    """Load source-only text (no references); rows are ``{"id", "source", "target": ""}``.

    A ``.txt`` file holds one sentence per line; TSV/JSONL files need only the source
    column. Empty lines are skipped; duplicated ids are errors; over-long rows as in
    :func:`load_pairs`.
    """
    path = resolve_uri(uri)
    name = path[:-3] if path.endswith(".gz") else path
    mine = Skipped()
    if name.endswith(".txt"):
        raw = ((lineno, None, line, "") for lineno, line in _long_lines(path, _lines(path, line_byte_cap(cfg)),
                                                                        cfg, mine))
    else:
        # The same readers as parallel data, with the target column optional (and ignored).
        raw = ((lineno, rid, src, "") for lineno, rid, src, _ in _raw_rows(path, cfg, False, mine))
    rows = _checked_rows(uri, (r for r in raw if r[2].strip()), cfg, False,
                         "no source sentences; data.sources needs one sentence per line (.txt) "
                         f"or a {cfg.source_column!r} column (TSV/JSONL)", mine)
    if skipped is not None:
        skipped.extend(mine)
    return rows


def _checked_rows(uri: str, raw, cfg: DataConfig, require_target: bool, if_empty: str,
                  skipped: Skipped) -> list[dict]:
    """Normalise whitespace and check every (line, id, source, target): empty text, length, unique ids.

    ``skipped`` collects this file's over-long rows (the reader adds lines over the byte cap).
    """
    base = os.path.basename(uri)
    rows, seen = [], {}
    for lineno, rid, src, tgt in raw:
        src, tgt = " ".join(src.split()), " ".join(tgt.split())
        if not src:
            raise DataError(f"{uri}:{lineno}: empty source text in column {cfg.source_column!r}")
        if require_target and not tgt:
            raise DataError(f"{uri}:{lineno}: empty target text in column {cfg.target_column!r}")
        why = _too_long(src, tgt, cfg)
        if why:
            _overlong(cfg, skipped, f"{uri}:{lineno}", *why)
            continue
        rid = rid if rid else f"{base}:{lineno}"
        if rid in seen:
            raise DataError(f"{uri}:{lineno}: id {rid!r} already used on line {seen[rid]}; ids must be unique")
        seen[rid] = lineno
        rows.append({"id": rid, "source": src, "target": tgt})
    if skipped.count:
        log.warning("%s: skipped %d over-long rows (data.overlong=skip; set data.overlong=error to stop "
                    "instead): %s", uri, skipped.count, skipped.describe())
    if not rows:
        extra = f" ({skipped.count} over-long rows skipped: {skipped.describe()})" if skipped.count else ""
        raise DataError(f"{uri}: {if_empty}{extra}")
    return rows


def _too_long(src: str, tgt: str, cfg: DataConfig) -> tuple[str, str] | None:
    """(why, fix) when the source or target is over ``data.max_words`` (in words or characters)."""
    for text, col in ((src, cfg.source_column), (tgt, cfg.target_column)):
        words = len(text.split())
        if words > cfg.max_words:
            return (f"{col!r} has {words} words, over data.max_words={cfg.max_words}",
                    "split it or raise the limit")
        # Few words but a huge text (a pasted blob, a missing newline) is just as absurd.
        if len(text) > cfg.max_words * MAX_CHARS_PER_WORD:
            return (f"{col!r} has {len(text)} characters, over {MAX_CHARS_PER_WORD} x data.max_words="
                    f"{cfg.max_words}; it is not a sentence", "remove the row or raise data.max_words")
    return None


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
    """The prepare step's output directory: the one place that knows its file names."""

    train: str
    valid: str
    test: str
    grow: str  # the training sources each Grow step samples for (plus source-only text)
    stats: dict
    skipped: Skipped = field(default_factory=Skipped)  # over-long rows left out of every file
    hard_test: str | None = None  # data.hard_test, when given: a second held-out test set
    control: str = ""  # the references the references-only control continues on ("" = grow's)

    def __post_init__(self):
        self.control = self.control or self.grow

    @classmethod
    def at(cls, out_dir: str) -> "PreparedData":
        """The files of a directory :func:`prepare` wrote (what a component receives as its ``data`` input)."""
        stats_path = os.path.join(out_dir, PREPARED_STATS)
        stats = read_json(stats_path) if os.path.isfile(stats_path) else {}
        optional = {name: split_file(out_dir, name) for name in OPTIONAL_SPLITS
                    if os.path.isfile(split_file(out_dir, name))}
        return cls(**{name: split_file(out_dir, name) for name in SPLITS}, stats=stats, **optional)


SPLITS = ("train", "valid", "test", "grow")
# Written only when asked for: data.hard_test; control.jsonl when data.grow gives a separate Grow
# pool (the control then continues on train, not on the pool's references).
OPTIONAL_SPLITS = ("hard_test", "control")
PREPARED_STATS = "stats.json"


def split_file(out_dir: str, name: str) -> str:
    """Where :func:`prepare` writes split ``name`` (train, valid, test, grow)."""
    return os.path.join(out_dir, f"{name}.jsonl")


def prepare(cfg: DataConfig, out_dir: str) -> PreparedData:
    """Load, check and split the data; write train/valid/test/grow JSONL into ``out_dir``.

    ``grow`` is the subset of train that each Grow step samples for (``grow_sources``).
    Splits taken from train are chosen by a hash of (seed, id), so they do not depend on
    row order.
    """
    skipped = {name: Skipped() for name in ("train", "valid", "test", "sources")}
    train = load_pairs(cfg.train, cfg, skipped=skipped["train"])
    valid = load_pairs(cfg.valid, cfg, skipped=skipped["valid"]) if cfg.valid else None
    test = load_pairs(cfg.test, cfg, skipped=skipped["test"]) if cfg.test else None
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
    held_out_sources = {r["source"] for r in valid} | {r["source"] for r in test}
    if cfg.grow:
        # A separate Grow pool (e.g. problems with the final answer only): sampled for instead of train.
        skipped["grow"] = Skipped()
        pool = load_pairs(cfg.grow, cfg, skipped=skipped["grow"])
        kept = [r for r in pool if r["source"] not in held_out_sources]
        if len(kept) < len(pool):  # sampling for test sources would leak them into training
            log.info("data.grow: dropped %d rows whose sources are valid/test sources", len(pool) - len(kept))
        grow = _subset(kept, cfg.grow_sources, rng)
    else:
        grow = _subset(train, cfg.grow_sources, rng)
    if cfg.sources:
        # Source-only text joins the Grow set with an empty target: it has no reference, so
        # only a reference-free reward can score its samples (checked by the score step).
        held_out = {r["source"] for r in valid} | {r["source"] for r in test}
        loaded = load_sources(cfg.sources, cfg, skipped=skipped["sources"])
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
        paths[name] = split_file(out_dir, name)
        write_jsonl(paths[name], rows)
    extra = {}
    if cfg.hard_test:
        skipped["hard_test"] = Skipped()
        extra["hard_test"] = load_pairs(cfg.hard_test, cfg, skipped=skipped["hard_test"])
    if cfg.grow:
        extra["control"] = train  # the pool's targets are not BC data: the control continues on train
    for name, rows in extra.items():
        paths[name] = split_file(out_dir, name)
        write_jsonl(paths[name], rows)
    stats = {name: {"rows": len(rows), "sha256": sha256_file(paths[name])}
             for name, rows in (("train", train), ("valid", valid), ("test", test), ("grow", grow))}
    stats["grow"]["source_only_rows"] = sum(1 for r in grow if not r["target"])
    stats.update({name: {"rows": len(rows), "sha256": sha256_file(paths[name])} for name, rows in extra.items()})
    total = Skipped()
    for name, sk in skipped.items():
        total.extend(sk)
        if name in stats:
            # Rows of the given file left out as over-long (for a split taken from train: train's).
            stats[name]["overlong_skipped"] = sk.count
    stats["grow"]["overlong_skipped_sources"] = skipped["sources"].count
    stats["overlong"] = {"action": cfg.overlong, "skipped": total.count, "examples": total.examples}
    write_json(os.path.join(out_dir, PREPARED_STATS), stats)
    log.info("data: %s", {k: stats[k]["rows"] for k in ("train", "valid", "test", "grow")})
    if total.count:
        log.warning("data: %d over-long rows skipped in all (data.overlong=skip): %s", total.count, total.describe())
    return PreparedData(**paths, stats=stats, skipped=total)


def _subset(rows: list[dict], limit: int, rng: random.Random) -> list[dict]:
    if not limit or limit >= len(rows):
        return list(rows)
    picked = sorted(rng.sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def read_rows(path: str) -> list[dict]:
    """Read a normalised JSONL split."""
    return list(read_jsonl(path))
