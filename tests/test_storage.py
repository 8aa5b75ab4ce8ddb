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
def test_server_down_then_restart_and_republish(s3_server, tmp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="rest.services.storage")
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
        retries = [r.getMessage() for r in caplog.records if r.name == "rest.services.storage"]
        assert len(retries) == 2 and "Connection refused (attempt 1/3); retrying in" in retries[0], retries
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


def test_retry_policy_is_the_http_clients():
    """Retries are urllib3's, configured from the settings: every method, the busy statuses, jitter."""
    store = ArtifactStore(S3Settings(endpoint="minio.test:9000", access_key="a", secret_key="b",
                                     max_retries=3, backoff_seconds=0.25))
    retry = store.client._http.connection_pool_kw["retries"]
    assert (retry.total, retry.connect, retry.read, retry.status, retry.other) == (3, 3, 3, 3, 3)
    assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
    assert retry.allowed_methods is None  # PUT, POST and DELETE retry too
    assert retry.respect_retry_after_header and retry.retry_after_max <= 60
    assert (retry.backoff_factor, retry.backoff_jitter) == (0.25, 0.25)
    assert retry.raise_on_status is False  # the last answer reaches minio, which reads its S3 code


def test_final_failures_become_clear_errors():
    """What urllib3 gave up on says how often it tried; other errors say what the server said."""
    from types import SimpleNamespace

    import urllib3
    from minio.error import S3Error, ServerError

    store = ArtifactStore(S3Settings(endpoint="minio.test:9000", access_key="a", secret_key="topsecret",
                                     bucket="bk", max_retries=3))

    def s3_error(code, status):
        return S3Error(SimpleNamespace(status=status), code, "msg topsecret", "/bk", "rid", "hid", "bk")

    def raising(exc):
        def fn():
            raise exc
        return fn

    assert store._call("op", lambda x: x + 1, 1) == 2
    with pytest.raises(StorageError) as err:
        store._call("upload x", raising(s3_error("SlowDown", 503)))
    msg = str(err.value)
    assert "SlowDown" in msg and "4 attempts" in msg and "http://minio.test:9000" in msg and "'bk'" in msg
    assert "topsecret" not in msg
    with pytest.raises(StorageError, match="4 attempts.*HTTP 502"):
        store._call("op", raising(ServerError("server failed with HTTP status code 502", 502)))
    refused = urllib3.exceptions.MaxRetryError(None, "/bk", urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"))
    with pytest.raises(StorageError, match="still failing after 4 attempts.*Connection refused.*reachable"):
        store._call("list", raising(refused))
    with pytest.raises(StorageError) as err:
        store._call("list", raising(s3_error("NoSuchBucket", 404)))
    assert "NoSuchBucket" in str(err.value) and "attempts" not in str(err.value)
    with pytest.raises(StorageError, match="rejected the credentials"):
        store._call("list", raising(s3_error("SignatureDoesNotMatch", 403)))
    with pytest.raises(StorageError, match="mid-transfer"):
        store._call("download", raising(urllib3.exceptions.ProtocolError("Connection broken")))
    one = ArtifactStore(dataclasses.replace(store.settings, max_retries=0))
    with pytest.raises(StorageError, match="after 1 attempt "):
        one._call("op", raising(s3_error("InternalError", 500)))


# -- faults between client and server ---------------------------------------------------------------

class FaultProxy:
    """An HTTP proxy in front of the S3 server that answers chosen requests with an error itself.

    ``fail(method, times, status, code)`` makes the next ``times`` requests with that method
    (and, if given, a query containing ``query``) get ``status`` with an S3 XML error body
    (``code``) or a plain-text one (``code=None``), without reaching the server. Everything
    else is forwarded. ``seen`` records (method, path, body length, body SHA-256, answer) for
    every request, so a test can check what a retried request carried.
    """

    def __init__(self, upstream: str):
        import http.server
        import threading

        self.upstream, self.rules, self.seen, self.lock = upstream, [], [], threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                import hashlib
                import http.client

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path, _, query = self.path.partition("?")
                with proxy.lock:
                    rule = next((r for r in proxy.rules if r["times"] > 0 and r["method"] == self.command
                                 and r["query"] in query), None)
                    if rule:
                        rule["times"] -= 1
                    proxy.seen.append((self.command, path, len(body), hashlib.sha256(body).hexdigest(),
                                       rule["status"] if rule else "forwarded"))
                if rule:
                    if rule["code"]:
                        data = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule["code"]}</Code>'
                                f"<Message>injected</Message><Resource>{path}</Resource>"
                                "<RequestId>fault</RequestId></Error>").encode()
                        ctype = "application/xml"
                    else:
                        data, ctype = b"upstream busy", "text/plain"
                    self.send_response(rule["status"])
                    self.send_header("Content-Type", ctype)
                    for k, v in rule["headers"].items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=dict(self.headers.items()))
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    # A HEAD answer has no body but keeps the object's length.
                    self.send_header("Content-Length", resp.getheader("Content-Length", "0")
                                     if self.command == "HEAD" else str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def fail(self, method, times, status, code=None, query="", headers=None):
        with self.lock:
            self.rules.append({"method": method, "times": times, "status": status, "code": code,
                               "query": query, "headers": headers or {}})

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fault_proxy(s3_server):
    proxy = FaultProxy(s3_server.endpoint)
    yield proxy
    proxy.stop()


def _via(proxy, s3_server, bucket, **kw):
    return dataclasses.replace(s3_server.settings(bucket=bucket), endpoint=proxy.endpoint, **kw)


@pytest.mark.integration
def test_slowdown_is_retried_and_the_whole_body_sent_again(s3_server, fault_proxy, tmp_path, caplog):
    import logging

    settings = _via(fault_proxy, s3_server, "slowdown", max_retries=4, backoff_seconds=0.01)
    store = ArtifactStore(settings)
    store.ensure_bucket()
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(300_000))
    fault_proxy.fail("PUT", 2, 503, "SlowDown")
    fault_proxy.fail("GET", 1, 500, "InternalError")
    fault_proxy.fail("HEAD", 1, 502)  # a load balancer's answer: no XML
    caplog.set_level(logging.WARNING, logger="rest.services.storage")
    res = store.put_file(str(src), "runs/r/0/0/weights.bin")
    assert res["uploaded"]
    puts = [s for s in fault_proxy.seen if s[0] == "PUT" and s[1].endswith("weights.bin")]
    assert [p[4] for p in puts] == [503, 503, "forwarded"]
    # Every attempt carried the whole file, byte for byte.
    assert {(p[2], p[3]) for p in puts} == {(300_000, sha256_file(str(src)))}
    back = store.get_file("runs/r/0/0/weights.bin", str(tmp_path / "back.bin"))
    assert sha256_file(back) == sha256_file(str(src))
    direct = ArtifactStore(s3_server.settings(bucket="slowdown"))  # what the server itself holds
    assert direct.digest("runs/r/0/0/weights.bin") == sha256_file(str(src))
    retries = [r.getMessage() for r in caplog.records if r.name == "rest.services.storage"]
    assert len(retries) == 4, retries  # one line per retry: 2 PUT, 1 HEAD, 1 GET
    assert any("PUT" in m and "HTTP 503 SlowDown" in m and "attempt 1/5" in m and "retrying in" in m
               for m in retries)
    assert any("GET" in m and "HTTP 500 InternalError" in m for m in retries)
    assert any("PUT" in m and "attempt 2/5" in m for m in retries)
    assert all(fault_proxy.endpoint in m and "/slowdown/runs/r/0/0/weights.bin" in m for m in retries)


@pytest.mark.integration
def test_multipart_upload_posts_are_retried(s3_server, fault_proxy, tmp_path):
    """A file over 5 MiB goes up in parts; the POSTs that start and complete it are retried too."""
    settings = _via(fault_proxy, s3_server, "multipart", max_retries=2, backoff_seconds=0.01)
    store = ArtifactStore(settings)
    store.ensure_bucket()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024))
    fault_proxy.fail("POST", 1, 503, "SlowDown", query="uploads")  # CreateMultipartUpload
    fault_proxy.fail("POST", 1, 503, "SlowDown", query="uploadId")  # CompleteMultipartUpload
    fault_proxy.fail("PUT", 1, 500, "InternalError", query="partNumber")
    store.put_file(str(src), "runs/r/0/0/big.bin")
    posts = [s for s in fault_proxy.seen if s[0] == "POST"]
    assert [p[4] for p in posts] == [503, "forwarded", 503, "forwarded"]
    assert posts[2][2] > 0 and posts[2][2:4] == posts[3][2:4]  # the completion's part list, sent again
    direct = ArtifactStore(s3_server.settings(bucket="multipart"))
    assert direct.digest("runs/r/0/0/big.bin") == sha256_file(str(src))
    back = direct.get_file("runs/r/0/0/big.bin", str(tmp_path / "back.bin"))
    assert sha256_file(back) == sha256_file(str(src))


@pytest.mark.integration
def test_busy_server_honours_retry_after_then_fails_clearly(s3_server, fault_proxy, caplog):
    import logging
    import time

    settings = _via(fault_proxy, s3_server, "busy", max_retries=2, backoff_seconds=0.01)
    store = ArtifactStore(settings)
    store.ensure_bucket()
    caplog.set_level(logging.WARNING, logger="rest.services.storage")
    fault_proxy.fail("GET", 1, 429, "SlowDown", headers={"Retry-After": "1"})
    t0 = time.monotonic()
    assert store.list("runs/") == []
    assert time.monotonic() - t0 >= 0.9  # waited as the server asked
    assert any("HTTP 429" in r.getMessage() and "retrying in ~1.0s" in r.getMessage() for r in caplog.records)

    fault_proxy.fail("GET", 99, 503, "SlowDown")
    before = len(fault_proxy.seen)
    with pytest.raises(StorageError) as err:
        store.list("runs/")
    msg = str(err.value)
    assert "SlowDown" in msg and "3 attempts" in msg and fault_proxy.endpoint in msg and "'busy'" in msg
    assert s3_server.secret_key not in msg
    assert len(fault_proxy.seen) - before == 3
