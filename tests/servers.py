"""Real local servers for integration tests: an S3 server (moto) and an MLflow tracking server.

Both listen on 127.0.0.1 only, on free ports. Use them with::

    from tests.servers import s3_server, mlflow_server  # noqa: F401  (pytest fixtures)

The S3 server stands in for MinIO (none can be installed here). It runs in-process
(``moto.server.ThreadedMotoServer``) so that ``stop()``/``start()`` behave like a MinIO
restart with a persistent volume: objects survive, connections in between are refused.
An IAM user with full access is created at start and its keys are the ones to use.
Inside ``with server.enforce_auth():`` the server rejects requests signed with any other
key, so wrong-credential paths are real. Enforcement is off otherwise because moto's
signature check cannot verify presigned URLs, which the MLflow server uses to serve
artifact downloads.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s (last error: {last})")


@dataclass
class S3Server:
    """A running moto S3 server; ``endpoint`` is ``host:port`` (minio style)."""

    port: int
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    _server: object = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        # One access-log line per S3 request would bury test failures.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_http(f"{self.url}/moto-api/", timeout=20)

    def stop(self) -> None:
        """Stop serving and close the listening socket (clients then get 'connection refused')."""
        if self._server is not None:
            self._server.stop()
            # ThreadedMotoServer.stop() leaves the socket bound: close it so the port is really down.
            inner = getattr(self._server, "_server", None)
            if inner is not None:
                inner.server_close()
            self._server = None

    def env(self) -> dict[str, str]:
        """Environment variables that point rest.services.storage and MLflow at this server."""
        return {
            "REST_S3_ENDPOINT": self.url,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def settings(self, bucket: str = "rest", prefix: str = "runs", **kw):
        from rest.services.storage import S3Settings

        return S3Settings(endpoint=self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                          bucket=bucket, prefix=prefix, secure=False, **kw)

    def _create_user(self) -> None:
        """Create an all-access IAM user whose keys the tests use."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="rest-test")
        iam.put_user_policy(UserName="rest-test", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="rest-test")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def _set_auth_limit(self, limit: str) -> None:
        # moto authenticates once its request counter reaches this limit ("0": at once, "inf": never).
        # text/plain: a form content type would make the server parse the body away.
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=limit.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    @contextlib.contextmanager
    def enforce_auth(self):
        """Within the block the server checks every request's signature and key."""
        self._set_auth_limit("0")
        try:
            yield self
        finally:
            self._set_auth_limit("inf")


class _Shared:
    """One server per pytest process, however many test modules import the fixture.

    A fixture imported into several test modules is a separate definition in each, and
    pytest tears each down after its module, so a plain session fixture would start one
    server per module. The fixtures get the server from here instead; it is stopped by
    a cleanup registered on the pytest config, which runs when the session ends.
    """

    def __init__(self, start, stop):
        self._start, self._stop, self.value = start, stop, None

    def get(self, config, *args):
        if self.value is None:
            self.value = self._start(*args)
            config.add_cleanup(self._cleanup)
        return self.value

    def _cleanup(self):
        value, self.value = self.value, None
        if value is not None:
            self._stop(value)


def _start_s3() -> S3Server:
    server = S3Server(port=free_port())
    server.start()
    try:
        server._create_user()
    except Exception:
        server.stop()
        raise
    return server


_S3 = _Shared(_start_s3, lambda server: server.stop())


@pytest.fixture(scope="session")
def s3_server(pytestconfig):
    """A moto S3 server on a free loopback port (credential checks on demand: ``enforce_auth``)."""
    pytest.importorskip("moto.server")
    return _S3.get(pytestconfig)


@dataclass
class MlflowServer:
    """A running ``mlflow server`` subprocess."""

    url: str
    proc: subprocess.Popen
    workdir: str


def _start_mlflow(s3_server: S3Server, tmp_path_factory) -> MlflowServer:
    import boto3

    work = str(tmp_path_factory.mktemp("mlflow_server"))
    s3 = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                      aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if "mlflow-artifacts" not in existing:
        s3.create_bucket(Bucket="mlflow-artifacts")

    port = free_port()
    env = {**os.environ, **s3_server.env(),
           # The background job runner (7 extra processes) is not needed for tracking tests.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = os.path.join(work, "server.log")
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{work}/mlflow.db",
           "--artifacts-destination", "s3://mlflow-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        # Own process group: teardown stops the server and its worker children by this PID.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                                start_new_session=True, preexec_fn=_die_with_parent)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=90, proc=proc)
    except RuntimeError as e:
        _stop(proc)
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"mlflow server did not start: {e}\n--- server log ---\n{tail}") from None
    return MlflowServer(url=url, proc=proc, workdir=work)


_MLFLOW = _Shared(_start_mlflow, lambda server: _stop(server.proc))


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory, pytestconfig):
    """A real MLflow tracking server: sqlite backend, artifacts proxied to the S3 server.

    Clients talk only HTTP to the tracking server (``mlflow-artifacts:/`` URIs), so they
    need no S3 credentials; the server itself writes to s3://mlflow-artifacts.
    """
    if not _has_module("mlflow"):
        pytest.skip("mlflow is not installed")
    return _MLFLOW.get(pytestconfig, s3_server, tmp_path_factory)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if pytest dies without teardown (e.g. killed by a timeout)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group (we started it, so its PID is the group id).

    SIGTERM first; then SIGKILL to the group, which also catches workers the server
    left behind (they keep the group id after their parent exits).
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


__all__ = ["s3_server", "mlflow_server", "S3Server", "MlflowServer", "free_port", "wait_http"]
