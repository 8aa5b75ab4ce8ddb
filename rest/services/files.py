"""File helpers: atomic writes, streamed JSONL, content digests.

Every artifact is written to a temporary name beside its final one and renamed into
place, so a reader (or a re-run after a crash) never sees half a file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    Works for files and directories. On failure the temporary is removed and ``path``
    keeps whatever it held before.
    """
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    _clean_stale(parent, os.path.basename(path))
    # The writer's pid in the name lets a later writer tell a dead one's leftovers from a live write.
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=parent)
    target = os.path.join(tmp, "out")
    try:
        yield target
        if os.path.isdir(path) and not os.path.islink(path):
            # A directory cannot be replaced by rename: move the old one aside first.
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier incarnation (a container restarted with the same pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(parent: str, base: str) -> None:
    """Remove temporaries that a killed writer of ``parent/base`` left behind.

    Left in place they would be published and digested with the directory they sit in.
    A directory moved aside just before a kill is moved back if nothing replaced it.
    """
    prefix = f".{base}."
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in sorted(names):
        if not name.startswith(prefix) or not name.endswith((".tmp", ".tmp.old")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        full = os.path.join(parent, name)
        if name.endswith(".old") and not os.path.exists(os.path.join(parent, base)):
            os.rename(full, os.path.join(parent, base))
        else:
            shutil.rmtree(full, ignore_errors=True)


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write rows as JSON lines; returns the row count."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


def read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    """Stream rows of a JSONL file; a bad line names the file and line number."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


def write_json(path: str, obj: Any) -> None:
    """Atomically write one JSON document."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=True)
            f.write("\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_path(path: str) -> str:
    """Digest of a file, or of a directory tree (relative names and contents, sorted)."""
    if os.path.isfile(path):
        return sha256_file(path)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            h.update(sha256_file(full).encode() + b"\n")
    return h.hexdigest()


def copy_tree(src: str, dst: str) -> None:
    """Atomically copy a directory to ``dst`` (replacing what was there)."""
    with atomic_path(dst) as tmp:
        shutil.copytree(src, tmp)
