"""Input validation: every bad input gives one error naming the field or file (and line) and the fix.

Table-driven: each case builds a broken input in a fresh directory, runs ``validate_run``
and matches the error message. The good policy is a real tiny one (its tokenizer counts
tokens); broken ones are stand-ins with the right file names and, where the case is not
about them, a real safetensors header.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import threading

import re

import pytest

from rest.steps.validate import redact_uri, validate_run
from tests.conftest import bundled_rows, write_tsv
from tests.servers import mlflow_server, s3_server  # noqa: F401  (fixtures)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_policy(d, files=("config.json", "model.safetensors", "tokenizer.json"), config=None, weights=b""):
    """A directory with these file names; model.safetensors holds a real one-tensor header unless
    ``weights`` gives other bytes."""
    from safetensors.torch import save_file
    import torch

    os.makedirs(d, exist_ok=True)
    for name in files:
        path = os.path.join(d, name)
        if name.endswith(".safetensors") and not weights:
            save_file({"w": torch.zeros(2)}, path)
            continue
        with open(path, "wb") as f:
            f.write(json.dumps(config or {"model_type": "mbart"}).encode() if name == "config.json" else
                    weights if name.endswith(".safetensors") else b"x")
    return str(d)


@pytest.fixture(autouse=True)
def _tiny(tiny_policy):
    Case.good_policy = tiny_policy


class Case:
    """One input: a config dict, data files and a (real, tiny) policy built under ``tmp``."""

    good_policy = ""

    def __init__(self, tmp):
        self.tmp = tmp
        self.config: dict = {}
        rows = bundled_rows("train", 12)
        self.train = write_tsv(tmp / "train.tsv", rows)
        self.valid = write_tsv(tmp / "valid.tsv", bundled_rows("valid", 4))
        self.test = write_tsv(tmp / "test.tsv", bundled_rows("test", 4))
        self.policy = str(tmp / "policy")
        shutil.copytree(self.good_policy, self.policy)
        self.kwargs: dict = {}
        self.warnings: list[str] = []

    def write(self, name, text: str | bytes):
        p = self.tmp / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return str(p)

    def run(self):
        return validate_run(self.config, train=self.train, valid=self.valid, test=self.test,
                            initial_policy=self.policy, warnings=self.warnings, **self.kwargs)


HEADER = "id\tde\ten\n"


def cfg(section, **values):
    def apply(c):
        c.config.setdefault(section, {}).update(values)
    return apply


def train_tsv(text):
    def apply(c):
        c.train = c.write("train.tsv", text)
    return apply


def train_jsonl(text):
    def apply(c):
        c.train = c.write("train.jsonl", text)
    return apply


def policy_files(*files, config=None, weights=b""):
    def apply(c):
        c.policy = fake_policy(c.tmp / "p2", files, config, weights)
    return apply


def heldout_tsv(text):
    def apply(c):
        c.test = c.write("test.tsv", text)
    return apply


def valid_tsv(text):
    def apply(c):
        c.valid = c.write("valid.tsv", text)
    return apply


def _truncated_weights() -> bytes:
    """A real safetensors file cut short in its tensor data: what an interrupted copy leaves."""
    import torch
    from safetensors.torch import save

    whole = save({"w": torch.zeros(256)})
    return whole[:len(whole) - 512]


TRUNCATED_WEIGHTS = _truncated_weights()
TRAIN_ROW = "\t".join(bundled_rows("train", 12)[4]) + "\n"   # a training row, to leak into the other splits


def setattr_(name, value):
    def apply(c):
        setattr(c, name, value(c) if callable(value) else value)
    return apply


def s3_unreachable(c):
    from rest.services.storage import S3Settings

    c.kwargs["s3_settings"] = S3Settings(endpoint=f"127.0.0.1:{free_port()}", access_key="k", secret_key="s")
    c.kwargs["timeout_s"] = 2.0


def mlflow_unreachable(c):
    c.kwargs["tracking_uri"] = f"http://127.0.0.1:{free_port()}"


def mlflow_sqlite_missing_dir(c):
    c.kwargs["tracking_uri"] = f"sqlite:///{c.tmp}/no/such/dir/mlflow.db"


def many(*fns):
    def apply(c):
        for f in fns:
            f(c)
    return apply


ROW = "a1\tHallo Welt\tHello world\n"

CASES = [
    # -- config values ---------------------------------------------------------------------
    ("thresholds not rising", cfg("filter", thresholds=[0.7, 0.6]),
     r"^filter\.thresholds: must rise: step 2 \(0\.6\) is not above step 1 \(0\.7\)$"),
    ("thresholds equal", cfg("filter", thresholds=[0.6, 0.6]), r"filter\.thresholds: must rise"),
    ("threshold above 1", cfg("filter", thresholds=[0.5, 1.5]),
     r"filter\.thresholds: 1\.5 is outside the reward range \[0, 1\]"),
    ("threshold below 0", cfg("filter", thresholds=[-0.1, 0.5]),
     r"filter\.thresholds: -0\.1 is outside the reward range \[0, 1\]"),
    ("thresholds empty (I = 0)", cfg("filter", thresholds=[]),
     r"filter\.thresholds: is empty; give at least one threshold"),
    ("temperature zero", cfg("sample", temperature=0.0), r"sample\.temperature: is 0\.0; must be > 0"),
    ("temperature negative", cfg("sample", temperature=-1.0), r"sample\.temperature: is -1\.0; must be > 0"),
    ("num_samples zero", cfg("sample", num_samples=0), r"sample\.num_samples: is 0; sample at least 1 candidate"),
    ("num_samples over the cap", cfg("sample", num_samples=100000),
     r"sample\.num_samples: is 100000, over the cap of 1024; the paper samples 25-100 .* use e\.g\. 8-100"),
    ("max_length_ratio over the cap", cfg("sample", max_length_ratio=50.0),
     r"sample\.max_length_ratio: is 50\.0; must be > 0 and at most 10 .* e\.g\. 2\.0"),
    ("max_length_ratio zero", cfg("sample", max_length_ratio=0.0), r"sample\.max_length_ratio: is 0\.0; must be > 0"),
    ("unknown overlong action", cfg("data", overlong="drop"), r"data\.overlong: is 'drop'; use skip .* or error"),
    ("grow_steps zero", cfg("loop", grow_steps=0), r"loop\.grow_steps: is 0; run at least 1 Grow step"),
    ("percentile mode wrong count", cfg("filter", mode="percentile", thresholds=[0.5, 0.6], percentiles=[50.0]),
     r"filter\.percentiles: has 1 values but thresholds has 2; give one per Improve step"),
    ("percentile out of range", cfg("filter", mode="percentile", thresholds=[0.5], percentiles=[100.0]),
     r"filter\.percentiles: 100\.0 is outside \[0, 100\)"),
    ("unknown filter mode", cfg("filter", mode="best"), r"filter\.mode: is 'best'; use global or percentile"),
    ("unknown section", lambda c: c.config.update(sampel={}), r"config: unknown section\(s\) \['sampel'\]"),
    ("misspelt setting", cfg("sample", temprature=0.5), r"sample: unknown setting\(s\) \['temprature'\]"),
    ("wrong type", cfg("sample", num_samples="many"), r"sample\.num_samples: cannot read 'many' as int"),
    ("checkpoint_every zero", cfg("finetune", checkpoint_every=0), r"finetune\.checkpoint_every: is 0; must be >= 1"),
    ("negative warm-up", cfg("finetune", warmup_steps=-5), r"finetune\.warmup_steps: is -5; must be >= 0"),
    # -- rewards ---------------------------------------------------------------------------
    ("unknown reward", cfg("score", reward="chrF++"), r"score\.reward: unknown reward 'chrF\+\+'; known: arithmetic, bleu, chrf, chrf1, exact_match"),
    ("dotted reward not allowed", cfg("score", reward="os:system"),
     r"score\.reward: 'os:system' is a dotted path: it runs code, so set score\.allow_code_reward=true"),
    ("dotted reward does not import", cfg("score", reward="no_such_module_xyz:fn", allow_code_reward=True),
     r"score\.reward: reward 'no_such_module_xyz:fn' does not import: No module named 'no_such_module_xyz'"),
    ("dotted reward missing function", cfg("score", reward="json:no_such_fn", allow_code_reward=True),
     r"score\.reward: reward 'json:no_such_fn' does not import"),
    ("true metric not reference-based", cfg("score", true_metric="comet"),
     r"score\.true_metric: is 'comet'; use chrf or bleu"),
    ("reward model heads", cfg("reward_model", heads=3), r"reward_model\.heads: must be > 0 and divide d_model \(128\)"),
    ("unknown hacking action", cfg("loop", on_reward_hacking="ignore"),
     r"loop\.on_reward_hacking: is 'ignore'; use warn, rollback or stop"),
    ("reward model dir without weights", cfg("score", reward="reward_model", reward_model_path="/nonexistent/rm"),
     r"score\.reward_model_path: /nonexistent/rm: policy directory not found"),
    # -- data files ------------------------------------------------------------------------
    ("empty file", train_tsv(""), r"train\.tsv: empty file; it needs a header row naming the columns"),
    ("header only", train_tsv(HEADER), r"train\.tsv: no data rows"),
    ("bad encoding", train_tsv(HEADER.encode() + ROW.encode() + "b2\tK\xe4se\tcheese\n".encode("latin-1")),
     r"train\.tsv:3: not UTF-8 text \(invalid continuation byte at byte 4\); re-encode the file as UTF-8"),
    ("missing column", train_tsv("id\tsrc\ten\n" + ROW),
     r"train\.tsv:1: header \['id', 'src', 'en'\] has no column 'de'; set data\.source_column"),
    ("empty source", train_tsv(HEADER + "a1\t \tHello\n"), r"train\.tsv:2: empty source text in column 'de'"),
    ("empty target", train_tsv(HEADER + ROW + "a2\tHallo\t\n"), r"train\.tsv:3: empty target text in column 'en'"),
    ("duplicated ids", train_tsv(HEADER + ROW + ROW.replace("Welt", "Erde")),
     r"train\.tsv:3: id 'a1' already used on line 2; ids must be unique"),
    ("too many words (overlong=error)", many(cfg("data", overlong="error"),
                                             train_tsv(HEADER + ROW + "a2\t" + "Wort " * 201 + "\tword\n")),
     r"train\.tsv:3: 'de' has 201 words, over data\.max_words=200; split it or raise the limit, "
     r"or set data\.overlong=skip"),
    ("absurd length in characters (overlong=error)", many(cfg("data", overlong="error"),
                                                          train_tsv(HEADER + "a1\tHallo\t" + "x" * 7000 + "\n")),
     r"train\.tsv:2: 'en' has 7000 characters, over 30 x data\.max_words=200"),
    ("only over-long rows", train_tsv(HEADER + "a1\t" + "Wort " * 201 + "\tword\n"),
     r"train\.tsv: no data rows.*\(1 over-long rows skipped: .*train\.tsv:2: 'de' has 201 words"),
    ("gigantic line (overlong=error)", many(cfg("data", overlong="error"),
                                            train_tsv(HEADER + ROW + "a2\t" + "x" * (3 << 20) + "\tbig\n")),
     r"train\.tsv:3: line of 3145736 bytes, over the 1048576-byte cap; split it into sentences"),
    ("duplicate header column", train_tsv("id\tde\ten\tde\n" + ROW.rstrip("\n") + "\tServus\n"),
     r"train\.tsv:1: column 'de' appears 2 times in the header \['id', 'de', 'en', 'de'\]; rename or remove"),
    ("duplicate JSON key", train_jsonl('{"de": "Hallo", "en": "Hi", "en": "Hello"}\n'),
     r"train\.jsonl:1: key 'en' appears twice in one object"),
    ("test source also in train", heldout_tsv(HEADER + "t1\tNeuer Satz\tNew sentence\n" + "t2\t" + TRAIN_ROW.split("\t", 1)[1]),
     r"data\.test: 1 source sentences of .*test\.tsv \(test\) are also in .*train\.tsv \(train\), e\.g\. '.+'; "
     r"test sentences seen in train make the reported figures optimistic"),
    ("test source also in valid", many(valid_tsv(HEADER + "v1\tGleicher Satz\tSame\n"),
                                       heldout_tsv(HEADER + "t1\tGleicher Satz\tSame\n")),
     r"data\.test: 1 source sentences of .*test\.tsv \(test\) are also in .*valid\.tsv \(valid\), "
     r"e\.g\. 'Gleicher Satz'"),
    ("wrong field count", train_tsv(HEADER + ROW + "a2\tHallo\tHello\textra\n"),
     r"train\.tsv:3: 4 tab-separated fields, the header has 3; remove stray tabs"),
    ("JSONL line not JSON", train_jsonl('{"de": "Hallo", "en": "Hello"}\n{"de": "Hallo",\n'),
     r"train\.jsonl:2: not valid JSON"),
    ("JSONL line not an object", train_jsonl('["Hallo", "Hello"]\n'), r"train\.jsonl:1: expected a JSON object"),
    ("JSONL missing key", train_jsonl('{"de": "Hallo"}\n'), r"train\.jsonl:1: no key 'en' \(keys: \['de'\]\)"),
    ("JSONL text not a string", train_jsonl('{"de": "Hallo", "en": 5}\n'), r"train\.jsonl:1: 'en' must be a string"),
    ("source equals target", train_tsv(HEADER + "".join(f"r{k}\tSame text {k}\tSame text {k}\n" for k in range(10))),
     r"train\.tsv: source equals target in 10 of the first 10 rows; columns 'de' and 'en' hold the same language"),
    ("unknown file format", setattr_("train", lambda c: c.write("train.csv", "de,en\n")),
     r"train\.csv: unknown format; name the file \*\.tsv or \*\.jsonl"),
    ("valid file missing", setattr_("valid", "/nonexistent/valid.tsv"), r"^/nonexistent/valid\.tsv: file not found$"),
    ("unsupported URI scheme", setattr_("test", "gs://bucket/test.tsv"),
     r"gs://bucket/test\.tsv: unsupported URI scheme; use a local path or s3://"),
    ("too few rows to split off valid/test", many(setattr_("valid", ""), setattr_("test", "")),
     r"train\.tsv: too few rows \(12\) to split off (valid|test) rows by data\.valid_fraction/data\.test_fraction; "
     r"give data\.valid and data\.test files"),
    # -- the policy directory -------------------------------------------------------------
    ("policy missing", setattr_("policy", "/nonexistent/policy"),
     r"initial policy: /nonexistent/policy: policy directory not found; set bootstrap\.policy .* or to '' to train"),
    ("policy without weights", policy_files("config.json", "tokenizer.json"),
     r"initial policy: .*p2: no \*\.safetensors weights$"),
    ("policy with only .bin weights", policy_files("config.json", "pytorch_model.bin", "tokenizer.json"),
     r"no \*\.safetensors weights \(found PyTorch \.bin weights: re-save with safe_serialization=True\)"),
    ("policy without config.json", policy_files("model.safetensors", "tokenizer.json"),
     r"initial policy: .*p2: no config\.json; save the model with save_pretrained\(\)"),
    ("policy without tokenizer", policy_files("config.json", "model.safetensors"),
     r"initial policy: .*p2: no tokenizer files; save the tokenizer into the same directory"),
    ("policy config not JSON", lambda c: (policy_files("config.json", "model.safetensors", "tokenizer.json")(c),
                                          open(os.path.join(c.policy, "config.json"), "w").write("{oops")),
     r"initial policy: .*config\.json: not a readable JSON model config"),
    ("policy wants remote code", policy_files("config.json", "model.safetensors", "tokenizer.json",
                                              config={"model_type": "x", "auto_map": {"AutoModel": "m.M"}}),
     r"config\.json asks to run the directory's own Python code \(auto_map\).*bootstrap\.trust_remote_code=true"),
    ("policy weights of 1 byte", policy_files("config.json", "model.safetensors", "tokenizer.json", weights=b"x"),
     r"initial policy: .*p2/model\.safetensors: not a readable safetensors file \(1 bytes: .*header too small\); "
     r"the file is truncated or not weights"),
    ("policy weights truncated", policy_files("config.json", "model.safetensors", "tokenizer.json",
                                              weights=TRUNCATED_WEIGHTS),
     rf"initial policy: .*model\.safetensors: not a readable safetensors file \({len(TRUNCATED_WEIGHTS)} bytes: "
     r".*\); the file is truncated"),
    ("policy not seq2seq", policy_files("config.json", "model.safetensors", "tokenizer.json",
                                        config={"model_type": "bert"}),
     r"initial policy: .*config\.json: model_type 'bert' is not an encoder-decoder \(seq2seq\) model that "
     r"AutoModelForSeq2SeqLM can load; a translation policy must be one of: .*\bmarian\b.*\bmbart\b.*\bt5\b"),
    ("policy with a classification head", policy_files("config.json", "model.safetensors", "tokenizer.json",
                                                       config={"model_type": "bart",
                                                               "architectures": ["BartForSequenceClassification"]}),
     r"architectures \['BartForSequenceClassification'\] hold no seq2seq language-model head \(for 'bart': "
     r"BartForConditionalGeneration\)"),
    ("policy tokenizer does not load", policy_files("config.json", "model.safetensors", "tokenizer.json"),
     r"initial policy: .*p2: the tokenizer does not load \(.*\); save it with tokenizer\.save_pretrained\(\)"),
    ("s3 policy without an object store", setattr_("policy", "s3://rest/runs/x/0/0/policy"),
     r"initial policy: s3://rest/runs/x/0/0/policy: an s3:// policy needs the object store: set REST_S3_ENDPOINT"),
    ("registry policy without MLflow", setattr_("policy", "models:/rest-de-en@champion"),
     r"initial policy: models:/rest-de-en@champion: a registry model needs the MLflow server holding it: "
     r"set MLFLOW_TRACKING_URI"),
    ("registry URI malformed", setattr_("policy", "models:/just-a-name"),
     r"initial policy: models:/just-a-name: not a registry URI; use models:/NAME/VERSION or models:/NAME@ALIAS"),
    # -- services ---------------------------------------------------------------------------
    ("MinIO unreachable", s3_unreachable,
     r"object store: check bucket rest: S3 endpoint http://127\.0\.0\.1:\d+, bucket 'rest' still failing.*"
     r"check REST_S3_ENDPOINT"),
    ("MLflow unreachable", mlflow_unreachable,
     r"MLflow tracking server http://127\.0\.0\.1:\d+: unreachable \(.*\); start it or fix MLFLOW_TRACKING_URI"),
    ("MLflow store directory missing", mlflow_sqlite_missing_dir,
     r"MLflow tracking store sqlite:///.*/no/such/dir/mlflow\.db: directory .*/no/such/dir does not exist"),
    ("MLflow unsupported scheme", lambda c: c.kwargs.update(tracking_uri="ftp://host/x"),
     r"MLflow tracking URI ftp://host/x: unsupported scheme 'ftp'"),
]


# Where a message starts: the config field, the input, or the file it is about.
NAMES_WHERE = re.compile(r"^(config|[a-z_]+(\.[a-z_]+)?|initial policy|object store|MLflow tracking (server|store|URI) \S+"
                         r"|/[^:]+\.(tsv|jsonl|csv)(:\d+)?|/nonexistent/\S+|gs://\S+): ")


@pytest.mark.parametrize("name, breaks, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(tmp_path, name, breaks, message):
    case = Case(tmp_path)
    breaks(case)
    with pytest.raises(ValueError, match=message) as err:
        case.run()
    assert NAMES_WHERE.match(str(err.value)), f"the message does not start with what it is about: {err.value}"


def test_good_inputs_pass(tmp_path):
    case = Case(tmp_path)
    cfg = case.run()
    assert cfg.filter.improve_steps == 3
    assert case.warnings == []


def test_overlong_rows_are_reported_not_fatal(tmp_path):
    case = Case(tmp_path)
    case.train = case.write("train.tsv", HEADER + ROW + "a2\t" + "Wort " * 201 + "\tword\n"
                            + "a3\t" + "x" * (3 << 20) + "\tbig\n" + "a4\tGuten Tag\tGood day\n")
    case.run()
    assert len(case.warnings) == 1
    assert case.warnings[0].startswith("2 over-long rows will be skipped (data.overlong=skip; over data.max_words=200): ")
    assert "train.tsv:3: 'de' has 201 words" in case.warnings[0] and "train.tsv:4: line of 3145736 bytes" in case.warnings[0]


def test_train_and_valid_sharing_sentences_or_ids_is_a_warning(tmp_path):
    case = Case(tmp_path)
    case.valid = case.write("valid.tsv", HEADER + TRAIN_ROW + "v9\tNeu\tNew\n")
    case.run()
    assert len(case.warnings) == 2
    assert "data.valid: 1 source sentences of " in case.warnings[0] and "validation will be optimistic" in case.warnings[0]
    assert case.warnings[1].startswith(f"data.valid: 1 ids also used in train (e.g. {TRAIN_ROW.split(chr(9))[0]!r})")


def test_rows_over_the_policy_token_limit_are_counted_before_any_compute(tmp_path):
    from rest.model.policy import load_policy, token_lengths

    case = Case(tmp_path)
    _, tok = load_policy(case.policy)
    words = " ".join(r[1] for r in bundled_rows("train", 60)).split()[:190]  # under max_words
    long = " ".join(words)
    n_tokens = token_lengths(tok, [long])[0]
    assert n_tokens > 256
    case.test = case.write("test.tsv", HEADER + "".join("\t".join(r) + "\n" for r in bundled_rows("test", 4))
                           + f"t9\t{long}\tshort\n")
    case.run()
    assert case.warnings == [f"1 of 21 rows are over the policy's maximum of 256 tokens ({case.test} id 't9': "
                             f"source has {n_tokens} tokens): training will skip them and translation will "
                             "truncate them to 256 tokens"]
    case.config = {"data": {"overlong": "error"}}
    with pytest.raises(ValueError, match=r"^data: 1 of 21 rows are over the policy's maximum of 256 tokens .*"
                                         r"split them, or set data\.overlong=skip"):
        case.run()


def test_check_data_false_skips_the_files(tmp_path):
    case = Case(tmp_path)
    case.train = case.write("train.tsv", "")
    validate_run({}, train=case.train, valid=case.valid, test=case.test, initial_policy=case.policy, check_data=False)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *a):
        pass


@pytest.fixture
def health_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_reachable_tracking_server_passes_and_wrong_server_is_named(tmp_path, health_server):
    case = Case(tmp_path)
    case.kwargs["tracking_uri"] = health_server
    case.run()
    case.kwargs["tracking_uri"] = health_server + "/not-mlflow"
    with pytest.raises(ValueError, match=r"MLflow tracking server http://127\.0\.0\.1:\d+/not-mlflow: "
                                         r"GET /health answered HTTP 404"):
        case.run()


def test_tracking_uri_password_is_never_shown(tmp_path):
    case = Case(tmp_path)
    case.kwargs["tracking_uri"] = f"http://alice:S3cr3tPassw0rd@127.0.0.1:{free_port()}"
    with pytest.raises(ValueError) as err:
        case.run()
    assert "S3cr3tPassw0rd" not in str(err.value)
    assert "alice:***@127.0.0.1" in str(err.value)
    assert redact_uri("http://h:5000") == "http://h:5000"


def test_cli_validate(tmp_path, capsys, monkeypatch):
    from rest_kfp.cli import main

    for var in ("REST_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    case = Case(tmp_path)
    common = ["validate", "--data.train", case.train, "--data.valid", case.valid, "--data.test", case.test,
              "--bootstrap.policy", case.policy]
    assert main(common) == 0
    # lstrip: after an in-process kfp.local run in the same session (tests/test_pipeline*.py),
    # kfp.local can leave print() indenting its output.
    assert capsys.readouterr().out.lstrip().startswith("ok: config, reward, policy, data (G=1, I=3)")
    assert main(common + ["--filter.thresholds", "0.8,0.7"]) == 2
    assert "error: filter.thresholds: must rise" in capsys.readouterr().err
    bad = case.write("bad.tsv", HEADER + ROW + ROW)
    assert main(common[:2] + [bad] + common[3:]) == 2
    assert "bad.tsv:3: id 'a1' already used on line 2" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert main(common) == 2
    assert "MLflow tracking server" in capsys.readouterr().err
    assert main(common + ["--no-services"]) == 0


# -- s3:// and models:/ policies, against the real local servers ---------------------------------

@pytest.mark.integration
def test_s3_policy_is_checked_in_the_object_store(tmp_path, s3_server, tiny_policy):
    from rest.services.storage import ArtifactStore

    settings = s3_server.settings(bucket="policies")
    store = ArtifactStore(settings)
    store.ensure_bucket()
    store.put_dir(tiny_policy, "runs/r1/0/0/policy")
    case = Case(tmp_path)
    case.kwargs.update(s3_settings=settings, timeout_s=5.0)
    case.policy = "s3://policies/runs/r1/0/0/policy"
    case.run()  # published, weights' header parses, tokenizer fetched and used for the token counts
    assert case.warnings == []

    case.policy = "s3://policies/runs/nothing-here"
    with pytest.raises(ValueError, match=r"^initial policy: s3://policies/runs/nothing-here: no _MANIFEST\.json "
                                         r"under this prefix \(the prefix is empty\)"):
        case.run()

    # Weights cut short on upload: the manifest lists them, the header check reads 8 + n bytes only.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_policy, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    store.put_dir(str(broken), "runs/r2/0/0/policy")
    case.policy = "s3://policies/runs/r2/0/0/policy"
    with pytest.raises(ValueError, match=r"^initial policy: s3://policies/runs/r2/0/0/policy/model\.safetensors: "
                                         r"not a readable safetensors file \(1000 bytes: .*publish the policy again"):
        case.run()

    # A non-seq2seq config behind a published prefix is caught too.
    (broken / "model.safetensors").write_bytes((tmp_path / "policy" / "model.safetensors").read_bytes())
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))
    store.put_dir(str(broken), "runs/r3/0/0/policy")
    case.policy = "s3://policies/runs/r3/0/0/policy"
    with pytest.raises(ValueError, match=r"s3://policies/runs/r3/0/0/policy/config\.json: model_type 'bert' is not"):
        case.run()


@pytest.mark.integration
def test_registry_policy_must_resolve_in_mlflow(tmp_path, mlflow_server, tiny_policy):
    from mlflow import MlflowClient

    from rest.services import registry

    uri, name = mlflow_server.url, "rest-validate-policy"
    version = registry.register_policy(tiny_policy, name, uri)
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(name, "champion", version)
    case = Case(tmp_path)
    case.kwargs["tracking_uri"] = uri
    for ok in (f"models:/{name}/{version}", f"models:/{name}@champion"):
        case.policy = ok
        case.run()
    for bad, message in (
            (f"models:/{name}/999", rf"initial policy: models:/{name}/999: model '{name}' on http://127\.0\.0\.1:\d+ "
                                    r"has no version '999'"),
            (f"models:/{name}@nope", rf"model '{name}' on .* has no alias 'nope'; list its versions"),
            ("models:/no-such-model@champion", r"initial policy: models:/no-such-model@champion: no registered model "
                                               r"'no-such-model' on http://127\.0\.0\.1:\d+")):
        case.policy = bad
        with pytest.raises(ValueError, match=message):
            case.run()
    case.policy = f"models:/{name}@champion"
    case.kwargs["tracking_uri"] = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match=r"^MLflow tracking server http://127\.0\.0\.1:\d+: unreachable"):
        case.run()
