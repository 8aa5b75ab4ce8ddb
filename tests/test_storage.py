"""rest.services.storage against a real S3 server (moto standing in for MinIO) on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from rest.services import storage
from rest.services.files import sha256_file, sha256_path
from rest.services.storage import MANIFEST, ArtifactStore, S3Settings, StorageError
from tests.servers import s3_server  # noqa: F401  (fixture)


# -- settings and keys: no server needed --------------------------------------------------------

def test_settings_from_env():
    assert S3Settings.from_env({}) is None
    s = S3Settings.from_env({"MLFLOW_S3_ENDPOINT_URL": "https://minio.example:9000",
                             "AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk-very-secret"})
    assert (s.endpoint, s.secure, s.bucket, s.prefix) == ("minio.example:9000", True, "rest", "runs")
    assert "sk-very-secret" not in repr(s)
    s = S3Settings.from_env({"REST_S3_ENDPOINT": "minio:9000", "REST_S3_BUCKET": "b", "REST_S3_PREFIX": "p/q/",
                             "REST_S3_SECURE": "true", "MLFLOW_S3_ENDPOINT_URL": "http://other:1"})
    assert (s.endpoint, s.secure, s.bucket, s.prefix) == ("minio:9000", True, "b", "p/q")
    with pytest.raises(ValueError, match="REST_S3_SECURE"):
        S3Settings.from_env({"REST_S3_ENDPOINT": "minio:9000", "REST_S3_SECURE": "maybe"})


@pytest.mark.parametrize("run,name", [
    ("..", "x"), ("r", "../x"), ("r", "/etc/passwd"), ("r", "a\\b"), ("", "x"), ("r", ""),
    ("r", "a//b"), ("a/b", "x"), ("r", "a/./b"),
])
def test_key_escape_refused(run, name):
    store = ArtifactStore(S3Settings(endpoint="127.0.0.1:9", access_key="a", secret_key="b"))
    with pytest.raises(StorageError, match="object key"):
        store.key_for(run, 0, 1, name)


def test_key_layout_and_bad_indices():
    store = ArtifactStore(S3Settings(endpoint="127.0.0.1:9", prefix="runs"))
    assert store.key_for("run-1", 2, 3, "policy/model") == "runs/run-1/2/3/policy/model"
    with pytest.raises(StorageError, match="integer"):
        store.key_for("r", -1, 0, "x")
    with pytest.raises(StorageError, match="not an s3"):
        storage.parse_uri("s3://bucket-only")
    with pytest.raises(StorageError, match="'..'"):
        storage.parse_uri("s3://b/runs/../secret")


def test_publish_without_store_is_a_noop(tmp_path, monkeypatch):
    monkeypatch.delenv("REST_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert storage.publish(str(f), "r", 0, 0, "a.txt") is None
    with pytest.raises(StorageError, match="REST_S3_ENDPOINT"):
        storage.fetch_to_local("s3://b/k.tsv", str(tmp_path))


# -- against the S3 server ----------------------------------------------------------------------

def _tree(root):
    os.makedirs(root / "sub", exist_ok=True)
    (root / "config.json").write_text(json.dumps({"a": 1}))
    (root / "weights.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "notes.txt").write_text("hello\n")
    return str(root)


@pytest.mark.integration
def test_file_round_trip_with_digest_metadata(s3_server, tmp_path):
    store = ArtifactStore(s3_server.settings(bucket="roundtrip"))
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    src = tmp_path / "data.jsonl"
    src.write_text('{"id": "1", "source": "Hallo", "target": "Hello"}\n')
    key = store.key_for("run-a", 1, 2, "data.jsonl")
    res = store.put_file(str(src), key)
    assert res["uploaded"] and res["sha256"] == sha256_file(str(src))
    assert store.exists(key) and not store.exists(key + ".missing")
    assert store.digest(key) == sha256_file(str(src))
    st = store.client.stat_object("roundtrip", key)
    assert st.metadata["x-amz-meta-sha256"] == sha256_file(str(src))
    assert store.list("runs/run-a/") == [key]
    out = store.get_file(key, str(tmp_path / "back" / "data.jsonl"))
    assert open(out).read() == src.read_text()
    assert store.put_file(str(src), key)["uploaded"] is False  # same content: skipped


@pytest.mark.integration
def test_publish_dir_twice_is_idempotent(s3_server, tmp_path):
    settings = s3_server.settings(bucket="dirs")
    local = _tree(tmp_path / "policy")
    first = storage.publish(local, "run-b", 1, 1, "policy", settings=settings)
    assert first == {"uri": "s3://dirs/runs/run-b/1/1/policy", "sha256": sha256_path(local)}
    store = ArtifactStore(settings)
    keys = store.list("runs/run-b/")
    etags = {k: store.client.stat_object("dirs", k).last_modified for k in keys}
    assert sorted(k.rsplit("policy/", 1)[1] for k in keys) == sorted(
        [MANIFEST, "config.json", "weights.bin", "sub/notes.txt"])

    second = storage.publish(local, "run-b", 1, 1, "policy", settings=settings)
    assert second == first
    assert store.list("runs/run-b/") == keys  # no duplicates
    assert {k: store.client.stat_object("dirs", k).last_modified for k in keys} == etags  # nothing rewritten

    back = storage.fetch_dir_to_local(first["uri"], str(tmp_path / "dl"), settings=settings)
    assert back == str(tmp_path / "dl" / "policy") and sha256_path(back) == first["sha256"]
    assert store.digest("runs/run-b/1/1/policy") == first["sha256"]

    # New content at the same place replaces the old: still one copy per file, no stale files.
    os.remove(os.path.join(local, "sub", "notes.txt"))
    (tmp_path / "policy" / "config.json").write_text("{}")
    third = storage.publish(local, "run-b", 1, 1, "policy", settings=settings)
    assert third["sha256"] == sha256_path(local) != first["sha256"]
    assert len(store.list("runs/run-b/")) == 3


@pytest.mark.integration
def test_reader_refuses_unpublished_or_corrupt_dir(s3_server, tmp_path):
    settings = s3_server.settings(bucket="partial")
    store = ArtifactStore(settings)
    store.ensure_bucket()
    local = _tree(tmp_path / "m")
    # Files without a manifest: what an interrupted upload leaves behind.
    store.put_file(os.path.join(local, "config.json"), "runs/r/0/0/m/config.json")
    with pytest.raises(StorageError, match="never completely published"):
        store.get_dir("runs/r/0/0/m", str(tmp_path / "out"))
    store.put_dir(local, "runs/r/0/0/m")
    # Overwrite one object behind the manifest's back: the reader must notice.
    import io
    store.client.put_object("partial", "runs/r/0/0/m/sub/notes.txt", io.BytesIO(b"tampered"), 8)
    with pytest.raises(StorageError, match="digest"):
        store.get_dir("runs/r/0/0/m", str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")  # nothing half-downloaded left behind


@pytest.mark.integration
def test_wrong_credentials_name_endpoint_and_bucket(s3_server):
    good = s3_server.settings(bucket="creds")
    bad = dataclasses.replace(good, secret_key="wrong-secret-value-123")
    with s3_server.enforce_auth():
        ArtifactStore(good).ensure_bucket()  # the right keys pass the same checks
        with pytest.raises(StorageError) as err:
            ArtifactStore(bad).list("")
        msg = str(err.value)
        assert s3_server.endpoint in msg and "'creds'" in msg and "credentials" in msg
        assert "wrong-secret-value-123" not in msg and s3_server.secret_key not in msg
        unknown = dataclasses.replace(bad, access_key="AKIANOSUCHKEY")
        with pytest.raises(StorageError, match="credentials"):
            ArtifactStore(unknown).ensure_bucket()


@pytest.mark.integration
def test_server_down_then_restart_and_republish(s3_server, tmp_path):
    settings = dataclasses.replace(s3_server.settings(bucket="outage"), max_retries=2, backoff_seconds=0.05)
    local = _tree(tmp_path / "policy")
    store = ArtifactStore(settings)
    store.ensure_bucket()
    # A first upload dies part-way: one file is there, no manifest.
    store.put_file(os.path.join(local, "config.json"), "runs/r/1/1/policy/config.json")
    s3_server.stop()
    try:
        with pytest.raises(StorageError) as err:
            storage.publish(local, "r", 1, 1, "policy", settings=settings)
        assert s3_server.endpoint in str(err.value) and "'outage'" in str(err.value)
        assert "3 attempts" in str(err.value)
        assert s3_server.secret_key not in str(err.value)
    finally:
        s3_server.start()
    res = storage.publish(local, "r", 1, 1, "policy", settings=settings)
    assert res["sha256"] == sha256_path(local)
    keys = store.list("runs/r/1/1/policy/")
    assert len(keys) == 4 and len(set(keys)) == 4
    for k in keys:
        if not k.endswith(MANIFEST):
            rel = k.split("policy/", 1)[1]
            assert store.digest(k) == sha256_file(os.path.join(local, *rel.split("/")))
    back = storage.fetch_dir_to_local(res["uri"], str(tmp_path / "dl"), settings=settings)
    assert sha256_path(back) == res["sha256"]


@pytest.mark.integration
def test_load_pairs_from_s3(s3_server, tmp_path, monkeypatch):
    from rest.config import DataConfig
    from rest.steps.data import load_pairs

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REST_S3_BUCKET", "datasets")
    monkeypatch.delenv("REST_S3_PREFIX", raising=False)
    # The core reads no environment: the KFP side (a component's step(), the CLI) configures the
    # store from it, as here.
    monkeypatch.setattr(storage, "_default_settings", storage.S3Settings.from_env(os.environ))  # = configure()
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("id\tde\ten\na\tHallo Welt\tHello world\nb\tGuten Tag\tGood day\n", encoding="utf-8")
    res = storage.publish(str(tsv), "data", 0, 0, "pairs.tsv")
    assert res["uri"] == "s3://datasets/runs/data/0/0/pairs.tsv"
    rows = load_pairs(res["uri"], DataConfig(train=res["uri"], valid="", test=""))
    assert rows == [{"id": "a", "source": "Hallo Welt", "target": "Hello world"},
                    {"id": "b", "source": "Guten Tag", "target": "Good day"}]
    path = storage.fetch_to_local(res["uri"], str(tmp_path / "f"))
    assert path == str(tmp_path / "f" / "pairs.tsv") and sha256_file(path) == res["sha256"]
    with pytest.raises(StorageError, match="no such object"):
        storage.fetch_to_local("s3://datasets/runs/none.tsv", str(tmp_path / "f"))


def test_retry_classification_without_server(monkeypatch):
    """SlowDown and 5xx are retried with backoff up to the bound; other errors fail at once."""
    from types import SimpleNamespace

    from minio.error import S3Error, ServerError

    sleeps = []
    monkeypatch.setattr(storage.time, "sleep", sleeps.append)
    store = ArtifactStore(S3Settings(endpoint="minio.test:9000", access_key="a", secret_key="topsecret",
                                     bucket="bk", max_retries=3, backoff_seconds=1.0))

    def s3_error(code, status):
        return S3Error(SimpleNamespace(status=status), code, "msg", "/bk", "rid", "hid", "bk")

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise s3_error("SlowDown", 503)
        if len(calls) == 2:
            raise ServerError("server failed with HTTP status code 502", 502)
        return "ok"

    assert store._call("op", flaky) == "ok" and len(calls) == 3
    assert len(sleeps) == 2 and 0.75 <= sleeps[0] <= 1.25 and 1.5 <= sleeps[1] <= 2.5  # exponential, jittered

    sleeps.clear()
    with pytest.raises(StorageError) as err:
        store._call("upload x", lambda: (_ for _ in ()).throw(s3_error("InternalError", 500)))
    assert len(sleeps) == 3 and "4 attempts" in str(err.value)
    assert "http://minio.test:9000" in str(err.value) and "'bk'" in str(err.value)

    sleeps.clear()
    with pytest.raises(StorageError, match="NoSuchBucket") as err:
        store._call("list", lambda: (_ for _ in ()).throw(s3_error("NoSuchBucket", 404)))
    assert sleeps == [] and "topsecret" not in str(err.value)
