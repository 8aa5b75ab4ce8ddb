"""Artifacts in an S3 object store (MinIO in the cluster) with content digests.

Layout: ``s3://<bucket>/<prefix>/<run>/<g>/<i>/<name>[/...]``. Every object carries its
SHA-256 in user metadata (``x-amz-meta-sha256``). A directory is *published* by
uploading all its files and then, last, a ``_MANIFEST.json`` listing every file with
its digest: readers trust a prefix only once its manifest exists and check each file
against it, so an interrupted upload is never mistaken for a finished one. Publishing
the same content again skips objects whose digest already matches, so a retried step
leaves no duplicates and no half-written objects.

Transient failures (refused or broken connections, timeouts, HTTP 429/500/502/503/504,
which is how S3 sends SlowDown) are retried by the HTTP client itself (urllib3's
``Retry``, bounded by :attr:`S3Settings.max_retries`, exponential backoff with jitter,
honouring Retry-After), each retry logged at WARNING. A failure that remains raises
:class:`StorageError`, whose message names the endpoint and bucket and never the secret key.

The :class:`ArtifactStore` takes explicit :class:`S3Settings`. The module functions
(:func:`fetch_to_local`, :func:`fetch_dir_to_local`, :func:`publish`) read the settings
from the environment when none are given, because that is how the component containers
receive them (a Kubernetes secret mapped to env vars).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, TypeVar

from rest.services.files import atomic_path, sha256_file, sha256_path

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
SHA_META = "x-amz-meta-sha256"
T = TypeVar("T")

# Statuses the HTTP client retries: the server is busy or briefly unwell, not refusing us.
# S3 sends SlowDown, ServiceUnavailable and XMinioServerNotInitialized as 503, InternalError as 500.
_RETRY_STATUSES = (429, 500, 502, 503, 504)
# A request is signed once and re-sent as is; S3 refuses a signature older than 15 minutes,
# so a server asking for a longer wait (Retry-After) gets at most this much per retry.
_RETRY_AFTER_MAX_S = 60
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


class StorageError(RuntimeError):
    """An object-store operation failed for good; the message names endpoint and bucket."""


@dataclass(frozen=True)
class S3Settings:
    """Where artifacts go. ``endpoint`` is ``host:port``; secrets are kept out of ``repr``."""

    endpoint: str
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    bucket: str = "rest"
    prefix: str = "runs"
    secure: bool = False
    region: str = "us-east-1"  # MinIO's default; naming it avoids a location lookup per bucket
    max_retries: int = 4        # retries after the first attempt
    backoff_seconds: float = 0.5  # urllib3's backoff factor: retries wait 0, 2x, 4x, 8x ... (+ up to 1x jitter)
    timeout_seconds: float = 30.0

    def __post_init__(self):
        if not self.endpoint or "/" in self.endpoint:
            raise ValueError(f"S3 endpoint {self.endpoint!r}: give host:port (e.g. minio:9000); "
                             "use S3Settings.from_env or parse_endpoint for URLs")
        if not self.bucket:
            raise ValueError("S3 bucket is empty; set REST_S3_BUCKET (default 'rest')")
        _check_segments(self.prefix, "prefix", allow_slash=True)
        if self.max_retries < 0:
            raise ValueError("S3Settings.max_retries must be >= 0")

    @property
    def url(self) -> str:
        return ("https://" if self.secure else "http://") + self.endpoint

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "S3Settings | None":
        """Settings from environment variables (the caller passes the mapping: the core never
        reads ``os.environ``); None when no endpoint is configured.

        REST_S3_ENDPOINT (host:port or URL; falls back to MLFLOW_S3_ENDPOINT_URL),
        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, REST_S3_BUCKET (default ``rest``),
        REST_S3_PREFIX (default ``runs``), REST_S3_SECURE (true/false; default: from the
        URL scheme, else false), REST_S3_REGION (default ``us-east-1``).
        """
        raw = environ.get("REST_S3_ENDPOINT") or environ.get("MLFLOW_S3_ENDPOINT_URL") or ""
        if not raw.strip():
            return None
        endpoint, secure = parse_endpoint(raw.strip())
        if environ.get("REST_S3_SECURE", "").strip():
            secure = _truthy(environ["REST_S3_SECURE"], "REST_S3_SECURE")
        return cls(endpoint=endpoint, access_key=environ.get("AWS_ACCESS_KEY_ID", ""),
                   secret_key=environ.get("AWS_SECRET_ACCESS_KEY", ""),
                   bucket=environ.get("REST_S3_BUCKET", "") or "rest",
                   prefix=(environ.get("REST_S3_PREFIX", "") or "runs").strip("/"),
                   secure=secure, region=environ.get("REST_S3_REGION", "") or "us-east-1")


def parse_endpoint(raw: str) -> tuple[str, bool]:
    """``http://host:port`` / ``https://host`` / ``host:port`` → (host:port, secure)."""
    m = re.fullmatch(r"(?:(https?)://)?([^/\s]+)/?", raw)
    if not m:
        raise ValueError(f"S3 endpoint {raw!r}: expected host:port or http(s)://host:port with no path")
    return m.group(2), m.group(1) == "https"


def _truthy(value: str, name: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


def _check_segments(path: str, what: str, allow_slash: bool) -> list[str]:
    """Split a key part into segments, refusing anything that could leave its prefix."""
    if not isinstance(path, str) or not path:
        raise StorageError(f"object key {what} is empty")
    if "\\" in path:
        raise StorageError(f"object key {what} {path!r} contains a backslash; use '/' between parts")
    if path.startswith("/"):
        raise StorageError(f"object key {what} {path!r} is absolute; give a relative name")
    if any(ord(c) < 32 for c in path):
        raise StorageError(f"object key {what} {path!r} contains control characters")
    parts = path.split("/")
    if not allow_slash and len(parts) > 1:
        raise StorageError(f"object key {what} {path!r} must be a single name without '/'")
    for p in parts:
        if p in ("", ".", ".."):
            raise StorageError(f"object key {what} {path!r} has an empty, '.' or '..' part; "
                               "it would escape or blur its prefix")
    return parts


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    m = re.fullmatch(r"s3://([^/]+)/(.+)", uri or "")
    if not m:
        raise StorageError(f"{uri!r}: not an s3://bucket/key URI")
    key = m.group(2).rstrip("/")
    _check_segments(key, "in " + uri, allow_slash=True)
    return m.group(1), key


def _s3_code(response) -> str:
    """' SlowDown' from an S3 XML error answer (small; urllib3 discards it after the retry), else ''."""
    try:
        if "xml" not in (response.headers.get("Content-Type") or ""):
            return ""
        m = re.search(rb"<Code>([A-Za-z0-9]{1,64})</Code>", response.data or b"")
        return " " + m.group(1).decode() if m else ""
    except Exception:  # a body that cannot be read is no reason to stop retrying
        return ""


@functools.cache
def _logged_retry_class():
    import urllib3

    class LoggedRetry(urllib3.Retry):
        """urllib3's Retry that logs each retry it grants, at WARNING, with the reason and the wait.

        urllib3 itself logs connection-error retries at WARNING but status retries (a 503
        SlowDown) only at DEBUG, so a step's log would hide that the store was struggling.
        """

        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            new = super().increment(method, url, response, error, _pool, _stacktrace)  # raises when spent
            if error is not None:
                reason = f"{type(error).__name__}: {error}"
            elif response is not None:
                reason = f"HTTP {response.status}{_s3_code(response)}"
            else:
                reason = "unknown"
            wait = None
            if response is not None and new.respect_retry_after_header:
                wait = new.get_retry_after(response)  # what sleep() will honour
            if not wait:
                wait = new.get_backoff_time()
            where = f"{_pool.scheme}://{_pool.host}:{_pool.port}" if _pool is not None else ""
            done = len(new.history)
            log.warning("S3 %s %s%s: %s (attempt %d/%d); retrying in ~%.1fs", method, where,
                        (url or "").split("?", 1)[0], reason, done, done + (new.total or 0) + 1, wait)
            return new

        def get_backoff_time(self) -> float:
            # Draw the jitter once per retry, so the wait logged above is the wait slept.
            if getattr(self, "_drawn", None) is None:
                self._drawn = super().get_backoff_time()
            return self._drawn

    return LoggedRetry


class ArtifactStore:
    """Digest-checked uploads and downloads against one bucket."""

    def __init__(self, settings: S3Settings):
        import urllib3
        from minio import Minio

        self.settings = settings
        n = settings.max_retries
        # The HTTP client retries, below minio: every S3 call is one request whose body minio
        # holds as bytes (uploads are read part by part into memory), so urllib3 re-sends it
        # whole with the same signed headers. allowed_methods=None: PUT/POST/DELETE retry too
        # (an object PUT or a DELETE is idempotent; see _call for what a repeated POST can do).
        # raise_on_status=False: once retries are spent the last response goes back to minio,
        # which turns its XML into an S3Error with the server's code (SlowDown, ...).
        # redirect=False: minio handles S3's redirects (wrong region) itself.
        retry = _logged_retry_class()(
            total=n, connect=n, read=n, status=n, other=n, redirect=False,
            status_forcelist=_RETRY_STATUSES, allowed_methods=None, raise_on_status=False,
            backoff_factor=settings.backoff_seconds, backoff_jitter=settings.backoff_seconds,
            respect_retry_after_header=True, retry_after_max=_RETRY_AFTER_MAX_S)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(10.0, settings.timeout_seconds), read=settings.timeout_seconds),
            retries=retry, maxsize=4)
        self.client = Minio(settings.endpoint, access_key=settings.access_key or None,
                            secret_key=settings.secret_key or None, secure=settings.secure,
                            region=settings.region, http_client=http)

    # -- keys -----------------------------------------------------------------------------

    def key_for(self, run: str, g: int, i: int, name: str) -> str:
        """``<prefix>/<run>/<g>/<i>/<name>``; refuses parts that would escape the prefix."""
        _check_segments(run, "run", allow_slash=False)
        for label, v in (("g", g), ("i", i)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise StorageError(f"object key {label} must be an integer >= 0, got {v!r}")
        _check_segments(name, "name", allow_slash=True)
        return f"{self.settings.prefix}/{run}/{g}/{i}/{name}"

    def uri(self, key: str) -> str:
        return f"s3://{self.settings.bucket}/{key}"

    # -- error handling -------------------------------------------------------------------

    def _where(self) -> str:
        return f"S3 endpoint {self.settings.url}, bucket {self.settings.bucket!r}"

    def _scrub(self, text: str) -> str:
        secret = self.settings.secret_key
        return text.replace(secret, "***") if secret else text

    def _call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run one client call; turn its failure into a :class:`StorageError` that says where.

        Retrying is the HTTP client's (see ``__init__``): what arrives here has failed for good.
        """
        from minio.error import InvalidResponseError, S3Error, ServerError
        import urllib3

        attempts = self.settings.max_retries + 1
        try:
            return fn(*args, **kwargs)
        except S3Error as e:
            status = getattr(e.response, "status", 0) or 0
            if e.code in _CREDENTIAL_CODES or (e.code == "AccessDenied" and status == 403):
                raise StorageError(
                    f"{what}: {self._where()} rejected the credentials ({e.code}); check "
                    f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy") from None
            retried, reason = status in _RETRY_STATUSES, f"{e.code}: {e.message}"
        except ServerError as e:
            retried, reason = e.status_code in _RETRY_STATUSES, f"HTTP {e.status_code}"
        except InvalidResponseError as e:
            code = getattr(e, "_code", 0) or 0
            retried, reason = code in _RETRY_STATUSES, f"non-XML response, HTTP {code}"
        except urllib3.exceptions.MaxRetryError as e:
            # Connection refused, reset or timed out on every attempt.
            retried, reason = True, f"{type(e.reason).__name__}: {e.reason}"
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError) as e:
            # Broke while a response body streamed in (a download), after urllib3 handed it over:
            # not retried here; the step fails and its task retry publishes or fetches again.
            raise StorageError(f"{what}: {self._where()}: the connection broke mid-transfer "
                               f"({self._scrub(f'{type(e).__name__}: {e}')}); is the server up and "
                               "reachable?") from None
        # A POST retried after its answer was lost (CompleteMultipartUpload) can come back
        # NoSuchUpload: it lands here as a plain failure, and a re-run of the step uploads again.
        reason = self._scrub(reason)
        if not retried:
            raise StorageError(f"{what}: {self._where()}: {reason}") from None
        raise StorageError(f"{what}: {self._where()} still failing after {attempts} "
                           f"attempt{'s' if attempts > 1 else ''} ({reason}); is the server up and "
                           "reachable?") from None

    # -- bucket and object queries ---------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent)."""
        b = self.settings.bucket
        if not self._call(f"check bucket {b}", self.client.bucket_exists, b):
            try:
                self._call(f"create bucket {b}", self.client.make_bucket, b)
            except StorageError as e:
                # Another task may have created it between our check and our create.
                if "BucketAlreadyOwnedByYou" not in str(e) and "BucketAlreadyExists" not in str(e):
                    raise

    def _stat(self, key: str):
        """Object stat, or None when the object does not exist."""
        from minio.error import S3Error

        def stat():
            try:
                return self.client.stat_object(self.settings.bucket, key)
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"):
                    return None
                raise
        return self._call(f"stat {key}", stat)

    def exists(self, key: str) -> bool:
        """True when the object ``key`` exists, or ``key`` is a published directory."""
        return self._stat(key) is not None or self._stat(f"{key}/{MANIFEST}") is not None

    def digest(self, key: str) -> str | None:
        """SHA-256 of object ``key`` (from its metadata) or of a published directory; None if absent."""
        st = self._stat(key)
        if st is not None:
            return (st.metadata or {}).get(SHA_META)
        manifest = self.read_manifest(key)
        return manifest["sha256"] if manifest else None

    def list(self, prefix: str = "") -> list[str]:
        """All object keys under ``prefix`` (recursive, sorted)."""
        def names():
            return sorted(o.object_name for o in self.client.list_objects(
                self.settings.bucket, prefix=prefix, recursive=True))
        return self._call(f"list {prefix or '/'}", names)

    def remove_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix`` (which must end with '/'); returns how many."""
        _check_segments(prefix.rstrip("/"), "prefix", allow_slash=True)
        if not prefix.endswith("/"):
            raise StorageError(f"remove {prefix!r}: give a prefix ending with '/', so no sibling matches it")
        keys = self.list(prefix)
        for key in keys:
            self._call(f"remove {key}", self.client.remove_object, self.settings.bucket, key)
        return len(keys)

    # -- files ----------------------------------------------------------------------------

    def put_file(self, local_path: str, key: str, digest: str | None = None) -> dict:
        """Upload one file with its SHA-256 in metadata; skip when the same content is there.

        Returns ``{"key", "uri", "sha256", "size", "uploaded"}``.
        """
        _check_segments(key, "key", allow_slash=True)
        digest = digest or sha256_file(local_path)
        size = os.path.getsize(local_path)
        st = self._stat(key)
        if st is not None and (st.metadata or {}).get(SHA_META) == digest and st.size == size:
            return {"key": key, "uri": self.uri(key), "sha256": digest, "size": size, "uploaded": False}
        self._call(f"upload {key}", self.client.fput_object, self.settings.bucket, key, local_path,
                   metadata={"sha256": digest})
        return {"key": key, "uri": self.uri(key), "sha256": digest, "size": size, "uploaded": True}

    def _put_bytes(self, data: bytes, key: str, content_type: str = "application/json") -> None:
        digest = hashlib.sha256(data).hexdigest()
        self._call(f"upload {key}", lambda: self.client.put_object(
            self.settings.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
            metadata={"sha256": digest}))

    def _get_bytes(self, key: str) -> bytes | None:
        from minio.error import S3Error

        def get():
            try:
                resp = self.client.get_object(self.settings.bucket, key)
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        return self._call(f"download {key}", get)

    def get_file(self, key: str, dest_path: str, expected_sha256: str | None = None) -> str:
        """Download ``key`` to ``dest_path`` atomically and check its digest.

        The expected digest is ``expected_sha256`` if given, else the object's metadata.
        """
        st = self._stat(key)
        if st is None:
            raise StorageError(f"download {key}: {self._where()}: no such object")
        want = expected_sha256 or (st.metadata or {}).get(SHA_META)
        with atomic_path(dest_path) as tmp:
            self._call(f"download {key}", self.client.fget_object, self.settings.bucket, key, tmp)
            got = sha256_file(tmp)
            if want and got != want:
                raise StorageError(f"download {key}: {self._where()}: content digest {got[:12]}… does not "
                                   f"match the recorded {want[:12]}…; the object is corrupt or was "
                                   "overwritten mid-read: re-publish it")
        return dest_path

    # -- directories ----------------------------------------------------------------------

    def read_manifest(self, key_prefix: str) -> dict | None:
        """The manifest of a published directory, or None when it was never (fully) published."""
        data = self._get_bytes(f"{key_prefix}/{MANIFEST}")
        if data is None:
            return None
        try:
            manifest = json.loads(data)
            assert isinstance(manifest.get("files"), dict) and "sha256" in manifest
        except (ValueError, AssertionError):
            raise StorageError(f"{key_prefix}/{MANIFEST}: {self._where()}: manifest is not valid; "
                               "re-publish the directory") from None
        return manifest

    def put_dir(self, local_dir: str, key_prefix: str) -> dict:
        """Publish every file of ``local_dir`` under ``key_prefix``, then its manifest (last).

        Re-publishing identical content uploads nothing. Publishing different content
        first withdraws the old manifest, so readers never pair it with new files.
        Returns the manifest (``files``: relative name → {sha256, size}; ``sha256``: tree digest).
        """
        _check_segments(key_prefix, "prefix", allow_slash=True)
        if not os.path.isdir(local_dir):
            raise StorageError(f"publish {local_dir}: not a directory")
        files: dict[str, dict] = {}
        for root, dirs, names in os.walk(local_dir):
            dirs.sort()
            for n in sorted(names):
                full = os.path.join(root, n)
                rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
                if rel == MANIFEST:
                    raise StorageError(f"publish {local_dir}: {MANIFEST} is reserved for the upload manifest")
                _check_segments(rel, f"file name in {local_dir}", allow_slash=True)
                files[rel] = {"sha256": sha256_file(full), "size": os.path.getsize(full)}
        manifest = {"format": 1, "files": files, "sha256": sha256_path(local_dir)}
        old = self.read_manifest(key_prefix)
        if old is not None and old.get("files") == files and old.get("sha256") == manifest["sha256"]:
            # Same content already published; still verify the objects are all there.
            missing = [r for r in files if self._stat(f"{key_prefix}/{r}") is None]
            if not missing:
                return old
        if old is not None:
            self._call(f"withdraw {key_prefix}/{MANIFEST}", self.client.remove_object,
                       self.settings.bucket, f"{key_prefix}/{MANIFEST}")
        uploaded = 0
        for rel, info in files.items():
            res = self.put_file(os.path.join(local_dir, *rel.split("/")), f"{key_prefix}/{rel}", info["sha256"])
            uploaded += res["uploaded"]
        self._put_bytes(json.dumps(manifest, indent=1, sort_keys=True).encode(), f"{key_prefix}/{MANIFEST}")
        # Objects left over from older content are not in the manifest, so readers ignore
        # them; remove them anyway so the prefix holds exactly one copy of the artifact.
        for key in self.list(key_prefix + "/"):
            rel = key[len(key_prefix) + 1:]
            if rel != MANIFEST and rel not in files:
                self._call(f"remove stale {key}", self.client.remove_object, self.settings.bucket, key)
        log.info("published %s (%d files, %d uploaded)", self.uri(key_prefix), len(files), uploaded)
        return manifest

    def get_dir(self, key_prefix: str, dest_dir: str) -> str:
        """Download a published directory to ``dest_dir`` (atomically), checking every digest."""
        manifest = self.read_manifest(key_prefix)
        if manifest is None:
            raise StorageError(f"download {key_prefix}/: {self._where()}: no {MANIFEST}, so the directory "
                               "was never completely published; re-run the step that produces it")
        with atomic_path(dest_dir) as tmp:
            os.makedirs(tmp)
            for rel, info in sorted(manifest["files"].items()):
                parts = _check_segments(rel, f"manifest entry of {key_prefix}", allow_slash=True)
                self.get_file(f"{key_prefix}/{rel}", os.path.join(tmp, *parts), expected_sha256=info["sha256"])
            if sha256_path(tmp) != manifest["sha256"]:
                raise StorageError(f"download {key_prefix}/: {self._where()}: tree digest does not match "
                                   "the manifest; re-publish the directory")
        return dest_dir


# -- module functions used by components and rest.steps.data ---------------------------------------

# The store the steps use when a call names none. The core never reads the environment: the
# KFP side (rest_kfp.runtime.step, the CLI) reads it once per process and configures it here.
_default_settings: S3Settings | None = None


def configure(settings: S3Settings | None) -> None:
    """Set the object store used when a call passes no settings (None: no store)."""
    global _default_settings
    _default_settings = settings


def configured() -> S3Settings | None:
    """The object store set by :func:`configure`, or None."""
    return _default_settings


def _store(settings: S3Settings | None, bucket: str | None = None) -> ArtifactStore:
    settings = settings or _default_settings
    if settings is None:
        raise StorageError("an s3:// URI was given but no object store is configured; set REST_S3_ENDPOINT "
                           "(or MLFLOW_S3_ENDPOINT_URL), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if bucket and bucket != settings.bucket:
        settings = dataclasses.replace(settings, bucket=bucket)
    return ArtifactStore(settings)


def fetch_to_local(uri: str, dest_dir: str, settings: S3Settings | None = None) -> str:
    """Download the object ``s3://bucket/key`` into ``dest_dir``; returns the local file path.

    Settings (endpoint, credentials) come from the environment unless given; the bucket
    comes from the URI.
    """
    bucket, key = parse_uri(uri)
    store = _store(settings, bucket)
    os.makedirs(dest_dir, exist_ok=True)
    return store.get_file(key, os.path.join(dest_dir, key.rsplit("/", 1)[-1]))


def fetch_dir_to_local(uri: str, dest_dir: str, settings: S3Settings | None = None) -> str:
    """Download a directory published with a manifest at ``s3://bucket/prefix``.

    It lands in ``dest_dir/<last part of prefix>``; returns that local directory.
    """
    bucket, key = parse_uri(uri)
    store = _store(settings, bucket)
    os.makedirs(dest_dir, exist_ok=True)
    return store.get_dir(key, os.path.join(dest_dir, key.rsplit("/", 1)[-1]))


def resume_uri(run: str, settings: S3Settings | None = None) -> str | None:
    """The run's root for resumable state, ``s3://<bucket>/<prefix>/<run>/resume``; None without a store.

    Under the run, beside its artifacts: a retried task of the same run finds it, another
    run does not (see :mod:`rest.services.resume`).
    """
    settings = settings or _default_settings
    if settings is None:
        return None
    _check_segments(run, "run", allow_slash=False)
    return f"s3://{settings.bucket}/{settings.prefix}/{run}/resume"


def publish(local_path: str, run: str, g: int, i: int, name: str,
            settings: S3Settings | None = None) -> dict | None:
    """Publish a file or directory to ``<prefix>/<run>/<g>/<i>/<name>``.

    Returns ``{"uri": "s3://...", "sha256": ...}`` (a directory's digest is
    :func:`rest.services.files.sha256_path`), or None when no object store is configured, so a
    local run works without one.
    """
    settings = settings or _default_settings
    if settings is None:
        return None
    store = ArtifactStore(settings)
    key = store.key_for(run, g, i, name)
    if not os.path.exists(local_path):
        raise StorageError(f"publish {local_path}: no such file or directory")
    store.ensure_bucket()
    if os.path.isdir(local_path):
        digest = store.put_dir(local_path, key)["sha256"]
    else:
        digest = store.put_file(local_path, key)["sha256"]
    return {"uri": store.uri(key), "sha256": digest}
