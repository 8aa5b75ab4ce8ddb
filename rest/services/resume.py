"""Resumable state of a long step (training checkpoints, Grow chunks), mirrored to the object store.

A killed step resumes from what it left on its local disk. On a cluster that is not
enough: a preempted pod is retried on a fresh pod with an empty disk. So, when the run
has an object store, every piece of resumable state the step saves locally is also
uploaded, and a step that starts with nothing local downloads what is there first.

Layout: ``s3://<bucket>/<prefix>/<run>/resume/<fingerprint>/<name>``. ``<run>`` is the
pipeline run: a retried task (same run) finds its own state, and a new run never picks
up another run's half-done state. ``<fingerprint>`` is the same fingerprint the step
already checks its local state against (policy, data and settings), so state made for
other inputs lives under another key and is never even downloaded.

What counts: a local file is written atomically (temporary name, then rename) before
its upload starts, and an S3 PUT (single or multipart) makes an object visible only once
its whole body has arrived, so a killed upload leaves no object, or the previous version
intact. Every object carries its SHA-256 (``x-amz-meta-sha256``) and a download checks
it. No separate marker object is needed: the object's existence is the marker.

When the step has written its outputs it calls :meth:`ResumeStore.clear`, which removes
its remote state; a failed step leaves it for the retry.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Iterable

from rest.services.files import atomic_path

log = logging.getLogger(__name__)


class ResumeStore:
    """A local directory of resumable state, mirrored to ``<resume_uri>/<key>/`` when a URI is given.

    ``resume_uri`` is the run's resume root (``s3://bucket/prefix/run/resume``, see
    :func:`rest.services.storage.resume_uri`) or None (local only: every method but
    :meth:`path` is then a no-op). ``key`` is the state's fingerprint, one path segment.
    The object store is the one :func:`rest.services.storage.configure` set, unless
    ``settings`` are given; the bucket comes from the URI.
    """

    def __init__(self, local_dir: str, resume_uri: str | None, key: str, settings=None, label: str = "resume"):
        from rest.services import storage

        self.local_dir, self.label, self._settings = local_dir, label, settings
        self.remote: str | None = None
        if resume_uri:
            storage._check_segments(key, "resume key", allow_slash=False)
            self.remote = f"{resume_uri.rstrip('/')}/{key}"
            self._bucket, self._key = storage.parse_uri(self.remote)
        self._pending: threading.Thread | None = None
        self._bucket_ready = False

    @property
    def mirrored(self) -> bool:
        """True when the state is mirrored to an object store."""
        return self.remote is not None

    def path(self, name: str) -> str:
        """The local path of the state file ``name``."""
        return os.path.join(self.local_dir, name)

    def _store(self):
        from rest.services import storage

        return storage._store(self._settings, self._bucket)

    # -- download -------------------------------------------------------------------------

    def pull(self, names: Iterable[str] | None = None, replace: bool = False) -> list[str]:
        """Download the remote state files (all, or only ``names``) that are not on the local disk.

        ``replace=True`` also overwrites local files of the same name (their local copy was
        found unusable). Returns the names downloaded. A store that cannot be read is
        logged and treated as empty: the step then recomputes, which is slower but correct.
        """
        if self.remote is None:
            return []
        from rest.services.storage import StorageError

        wanted = None if names is None else set(names)
        got = []
        try:
            store = self._store()
            self._ensure_bucket(store)  # the run's first step may find no bucket yet: nothing saved
            for key in store.list(self._key + "/"):
                name = key[len(self._key) + 1:]
                if "/" in name or (wanted is not None and name not in wanted):
                    continue
                if os.path.exists(self.path(name)) and not replace:
                    continue
                os.makedirs(self.local_dir, exist_ok=True)
                store.get_file(key, self.path(name))  # atomic, digest-checked
                got.append(name)
        except StorageError as e:
            log.warning("%s: could not read the saved state at %s (%s); starting from what is on the local disk",
                        self.label, self.remote, e)
        if got:
            log.info("%s: fetched %d saved state file(s) from %s/", self.label, len(got), self.remote)
        return got

    # -- upload ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def saving(self, name: str, background: bool = False):
        """Yield a temporary path to write ``name`` to; then rename it into place and upload it.

        ``background=True`` uploads in a thread, so a large checkpoint's upload overlaps
        the next steps' compute. At most one upload is in flight: the next save waits
        for it first, so the file is never replaced while it is read, and an older state
        never lands after a newer one.
        """
        self.wait()
        with atomic_path(self.path(name)) as tmp:
            yield tmp
        self.push(name, background=background)

    def push(self, name: str, background: bool = False) -> None:
        """Upload the local state file ``name`` (already complete on disk); see :meth:`saving`.

        An upload that fails is logged, not raised: the step's result does not depend on
        it, only how much a retry on a fresh pod would redo.
        """
        if self.remote is None:
            return
        self.wait()
        if background:
            self._pending = threading.Thread(target=self._upload, args=(name,), daemon=True,
                                             name=f"resume-upload-{name}")
            self._pending.start()
        else:
            self._upload(name)

    def _upload(self, name: str) -> None:
        from rest.services.storage import StorageError

        try:
            store = self._store()
            self._ensure_bucket(store)
            store.put_file(self.path(name), f"{self._key}/{name}")
            log.info("%s: saved %s to %s/", self.label, name, self.remote)
        except (StorageError, OSError) as e:
            log.warning("%s: could not upload %s to %s (%s); a retry on a fresh disk would redo this part",
                        self.label, name, self.remote, e)

    def _ensure_bucket(self, store) -> None:
        if not self._bucket_ready:
            store.ensure_bucket()  # as publishing does: the run's artifacts go to the same bucket
            self._bucket_ready = True

    def wait(self) -> None:
        """Wait for the upload in flight, if any."""
        if self._pending is not None:
            self._pending.join()
            self._pending = None

    # -- cleanup --------------------------------------------------------------------------

    def clear(self) -> int:
        """Remove the remote state (after the step wrote its outputs); returns the objects removed.

        Local files are the caller's to keep or remove. A failure is logged: leftover
        state only costs storage, and the run's prefix can be removed as a whole.
        """
        if self.remote is None:
            return 0
        from rest.services.storage import StorageError

        self.wait()
        try:
            n = self._store().remove_prefix(self._key + "/")
        except StorageError as e:
            log.warning("%s: could not remove the saved state at %s (%s)", self.label, self.remote, e)
            return 0
        if n:
            log.info("%s: removed %d saved state file(s) from %s/", self.label, n, self.remote)
        return n
