"""Run untrusted Python candidates (a program plus its unit tests) in a locked-down child process.

A verifiable "unit tests" reward executes code that a policy wrote. That code may loop
forever, fork until the machine stops, allocate all memory, flood the disk, talk to the
network, or try to edit the project that is scoring it. :class:`Sandbox` runs each
candidate in its own process and turns every such behaviour into ``passed=False`` with a
``reason``, so one hostile candidate costs a reward of 0 and the batch goes on.

What the child gets (strong mode: the scorer runs as root, or may create user
namespaces; the result's ``isolation`` field says what was set up):

* **New namespaces** via ``unshare(2)`` (Python 3.11 has no ``os.unshare``, so through
  ``ctypes``): network (no interface up, so no connection to anything, not even the
  host's 127.0.0.1), mount, SysV IPC and PID. The PID namespace's init is a tiny reaper
  above the harness; when it exits (the harness is done, or the scorer killed the process
  group) the kernel kills everything left in the namespace, including daemons that left
  the process group with ``setsid()``. The candidate sees only its own processes.
* **A read-only view of every filesystem** (per-mount ``MS_RDONLY`` on the namespace's
  copy of each mount; the host's mounts are untouched) with fresh, size-capped tmpfs over
  ``/tmp``, ``/var/tmp`` and ``/dev/shm``. The working directory and ``HOME`` are
  ``/tmp/work`` on that tmpfs: empty at the start, gone with the last process. The
  scorer's working directory (the project, its data, its runs) and ``hide_paths`` are
  covered with an empty read-only tmpfs, so the candidate cannot even read them.
* **Its own user id** when the scorer is root: a uid that no account and no other
  sandbox uses (taken from a range, one lock file per uid), no supplementary groups,
  ``PR_SET_NO_NEW_PRIVS`` (set-uid binaries cannot give root back), no capabilities.
  This is what makes ``RLIMIT_NPROC`` real: the kernel never applies that limit to uid
  0, so a fork bomb run "as root with RLIMIT_NPROC" is not limited at all. With a private
  uid the limit counts exactly this candidate's processes. The uid also keeps the
  candidate from signalling or ptracing the scorer and from reading ``/root`` (Python's
  own tree is bind-mounted back at its path when it lives there, e.g. under pyenv).
  Without root, a user namespace (mapped to the scorer's own uid) gives the same
  namespaces; the harness drops its capabilities in it, and ``RLIMIT_NPROC`` is the
  uid's process count at start plus the allowance.
* **rlimits**: CPU seconds (``RLIMIT_CPU``: SIGXCPU, SIGKILL a second later), address
  space (``RLIMIT_AS``: a 10 GB allocation raises MemoryError), file size
  (``RLIMIT_FSIZE``: also caps stdout/stderr, which go to files; Python ignores SIGXFSZ,
  so the write fails with EFBIG), open files, no core dumps.
* **Isolated Python**: ``python -I -S -B`` (no ``PYTHON*`` variables, no user or system
  site-packages, so neither the project nor any installed package is importable; the
  working directory is not on ``sys.path``), a clean environment (nothing inherited:
  no AWS_*/MLFLOW_* secrets), stdin from /dev/null.
* **A wall-clock limit** enforced by the scorer: on expiry the process group is killed
  (which takes the PID namespace with it), then every process still owned by the
  candidate's uid. That uid sweep also runs after a normal exit.

Weak mode (``require_strong=False`` and the kernel refuses namespaces, e.g. a pod
without CAP_SYS_ADMIN under a seccomp profile that blocks ``unshare``): the same rlimits,
uid and process group, plus Python audit hooks (PEP 578) that refuse sockets, process
creation, ``ctypes`` and writes outside the working directory. Audit hooks are *not* a
security boundary (a C extension or an interpreter bug gets past them), and as root
without a mount namespace the uid cannot be dropped when Python lives under ``/root``;
the default (``require_strong=True``) therefore refuses to run in weak mode at all
(reason ``isolation_unavailable``), so a misconfigured scorer fails loudly.

Known limits even in strong mode: the tests run in the same interpreter as the candidate
(they call its functions), so a candidate that introspects the harness (frames, ``gc``)
could read the tests or the per-run secret that marks a genuine verdict and forge a
pass. The secret defeats the cheap forgeries (``exit(0)``, ``os._exit(0)``, printing
"passed", writing to every descriptor). Nothing else depends on the candidate's
cooperation. No seccomp filter: the kernel's whole syscall surface is reachable.
About 0.2 s per candidate (interpreter start and namespace setup dominate).
"""
from __future__ import annotations

import fcntl
import inspect
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

__all__ = ["SandboxConfig", "SandboxResult", "Sandbox", "SandboxError", "REASONS"]

#: Every ``reason`` a :class:`SandboxResult` can carry.
REASONS = (
    "ok",             # the program ran and every test passed
    "tests_failed",   # an assertion (or any error) in the tests
    "crashed",        # the program raised, exited early, or died without a result
    "syntax_error",   # the program (or the tests) do not compile
    "timeout",        # wall-clock limit: the whole process tree was killed
    "cpu_limit",      # RLIMIT_CPU: SIGXCPU or the hard-limit SIGKILL
    "memory",         # RLIMIT_AS: MemoryError
    "output_limit",   # RLIMIT_FSIZE: stdout/stderr or a file grew past the cap (SIGXFSZ)
    "process_limit",  # RLIMIT_NPROC: fork/thread creation refused
    "forbidden",      # the sandbox refused an operation (read-only filesystem, no network, ...)
    "isolation_unavailable",  # require_strong and the kernel refused namespaces/uid drop
)


class SandboxError(RuntimeError):
    """The sandbox itself could not run (bad configuration, no free uid, interpreter missing)."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation for one candidate run. Every field has a safe default."""

    wall_seconds: float = 10.0
    """Wall-clock limit, interpreter start-up included; the process tree is killed after it."""
    cpu_seconds: int = 5
    """RLIMIT_CPU (whole seconds): SIGXCPU at this much CPU time, SIGKILL one second later."""
    memory_bytes: int = 512 << 20
    """RLIMIT_AS: address space per process. The interpreter needs ~30 MB of it."""
    file_size_bytes: int = 8 << 20
    """RLIMIT_FSIZE: the largest file the candidate may write; also caps stdout/stderr."""
    tmpfs_bytes: int = 64 << 20
    """Size of the private tmpfs holding the working directory (and /tmp, /var/tmp, /dev/shm)."""
    max_processes: int = 16
    """RLIMIT_NPROC: processes (and threads) the candidate may have at once."""
    max_open_files: int = 64
    """RLIMIT_NOFILE."""
    output_chars: int = 2000
    """How much of stdout/stderr to keep in the result (head, then a note of what was cut)."""
    workers: int = 2
    """Candidates run at once by :meth:`Sandbox.run_many`."""
    require_strong: bool = True
    """Refuse (reason ``isolation_unavailable``) rather than fall back to Python audit hooks."""
    use_namespaces: bool = True
    """Create network/mount/IPC/PID namespaces. Turn off only to test the weak fallback."""
    drop_privileges: bool = True
    """As root: run the candidate under a private uid. Turn off only to test the weak fallback."""
    uid_base: int = 1_900_000_000
    """First uid of the private range (as root). No account should live in the range."""
    uid_count: int = 4096
    """Size of the private uid range: at most this many sandboxes run at once on one host."""
    hide_paths: tuple = ()
    """Directories the candidate must not even read (covered by an empty tmpfs), e.g. data dirs."""
    hide_cwd: bool = True
    """Also hide the working directory the scorer had when the Sandbox was made (the project, its data)."""
    python: str = ""
    """Interpreter for the candidate; empty means the scorer's own (``sys.executable``)."""

    def __post_init__(self):
        def need(ok: bool, name: str, fix: str):
            if not ok:
                raise ValueError(f"SandboxConfig.{name}={getattr(self, name)!r}: {fix}")

        need(self.wall_seconds > 0, "wall_seconds", "must be > 0 seconds")
        need(isinstance(self.cpu_seconds, int) and self.cpu_seconds >= 1, "cpu_seconds",
             "must be a whole number of seconds >= 1 (RLIMIT_CPU counts seconds)")
        need(self.memory_bytes >= 64 << 20, "memory_bytes",
             "must be at least 64 MiB (67108864): the interpreter alone maps ~30 MB")
        need(self.file_size_bytes >= 4096, "file_size_bytes", "must be at least 4096 bytes")
        need(self.tmpfs_bytes >= 1 << 20, "tmpfs_bytes", "must be at least 1 MiB")
        need(self.max_processes >= 1, "max_processes", "must be >= 1 (the candidate itself)")
        need(self.max_open_files >= 16, "max_open_files", "must be >= 16 (the interpreter needs a few)")
        need(self.output_chars >= 0, "output_chars", "must be >= 0")
        need(self.workers >= 1, "workers", "must be >= 1")
        need(self.uid_base >= 65536 and self.uid_base + self.uid_count < 2**32 - 1, "uid_base",
             "must leave the range [uid_base, uid_base + uid_count) above 65535 and below 2**32-1")
        need(self.uid_count >= 1, "uid_count", "must be >= 1")
        object.__setattr__(self, "hide_paths", tuple(self.hide_paths))
        need(all(isinstance(p, str) and os.path.isabs(p) and os.path.realpath(p) != "/" for p in self.hide_paths),
             "hide_paths", "must be absolute directory paths other than '/'")


@dataclass
class SandboxResult:
    """What happened to one candidate. ``passed`` is True only for reason ``ok``."""

    passed: bool
    reason: str
    detail: str = ""
    wall_seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    isolation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------
# The child. This function's *source* is sent to a fresh ``python -I -S -B -c`` (the
# project is not importable there), so it must be self-contained: imports inside, no
# globals. It reads its job from the result file descriptor (argv[1]), sets up isolation,
# runs the candidate and the tests, and writes a JSON verdict back to that descriptor.
# --------------------------------------------------------------------------------------
def _child_main():  # pragma: no cover - runs in the sandboxed child (the tests exercise it there)
    import ctypes
    import errno
    import json
    import linecache
    import os
    import resource
    import sys
    import traceback

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    fd = int(sys.argv[1])
    raw = b""
    os.lseek(fd, 0, 0)
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        raw += chunk
    os.lseek(fd, 0, 0)
    os.ftruncate(fd, 0)  # the job (and its secret) no longer sits in the file
    job = json.loads(raw)
    del raw
    nonce = job.pop("nonce")
    me = {"pid": os.getpid()}  # the process whose verdict counts (changes after the forks below)
    iso = {"namespaces": "none", "uid": "same", "filesystem": "shared", "network": "shared",
           "processes": "process group", "python": "-I -S -B, clean environment"}

    def report(status, detail=""):
        if os.getpid() != me["pid"]:  # a fork of the candidate finished the harness code: stay silent
            os._exit(0)
        for stream in (sys.stdout, sys.stderr):  # what the candidate printed, before _exit drops it
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - a full disk or a replaced stream must not cost the verdict
                pass
        out = json.dumps({"nonce": nonce, "status": status, "detail": detail[-4000:],
                          "isolation": iso}).encode()
        try:
            os.lseek(fd, 0, 0)
            os.ftruncate(fd, 0)
            os.write(fd, out)
        finally:
            os._exit(0)  # no atexit handlers, no lingering candidate threads

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = (
        1, 2, 4, 8, 32, 4096, 8192, 16384, 1 << 18)
    CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
        0x20000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
    PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # the scorer's thread dies: so do we

    def mount(src, target, fstype, flags, data=None):
        enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
        if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mount({src!r}, {target!r}): {os.strerror(e)}")

    def mountpoints():
        def unescape(s):
            return (s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
                    .replace("\\134", "\\"))
        with open("/proc/self/mountinfo") as f:
            return [unescape(line.split()[4]) for line in f]

    def blocked_ancestor(path):
        """The first directory on ``path`` that an unrelated uid cannot enter, or None."""
        cur = "/"
        for part in [""] + os.path.abspath(path).split(os.sep)[1:]:
            cur = os.path.join(cur, part) if part else cur
            try:
                if not os.stat(cur).st_mode & 0o001:
                    return cur
            except OSError:
                return None
        return None

    def processes_of(uid):
        n = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        n += any(line.startswith("Uid:") and line.split()[1] == str(uid) for line in f)
                except OSError:
                    pass
        return n

    def wait_and_mirror(child):
        """Wait for ``child`` (reaping anything else that lands on us) and exit as it did."""
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                os._exit(70)
            if pid == child:
                # An exit code, or 128 + the signal (a pid-namespace init cannot re-raise it).
                os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))

    root = os.geteuid() == 0
    drop = root and job["drop_privileges"]
    uid, gid = job["uid"], job["gid"]
    outer_uid, outer_gid = os.getuid(), os.getgid()
    workdir = os.getcwd()
    private_fs = in_pidns = False
    nproc_base = 0 if drop else processes_of(outer_uid)  # counted on the host's /proc

    # 1. Namespaces: network (nothing up), mount (read-only view, private tmpfs), IPC, PID.
    #    As root no user namespace is needed; otherwise one is asked for.
    if job["use_namespaces"]:
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID | (0 if root else CLONE_NEWUSER)
        if libc.unshare(flags) == 0:
            iso["namespaces"] = ("" if root else "user+") + "mount+net+ipc+pid"
            iso["network"] = "own namespace, no interface up"
            try:
                if not root:  # map ourselves to ourselves; no other id exists in the namespace
                    for name, text in (("setgroups", "deny"), ("uid_map", f"{outer_uid} {outer_uid} 1"),
                                       ("gid_map", f"{outer_gid} {outer_gid} 1")):
                        with open(f"/proc/self/{name}", "w") as f:
                            f.write(text)
                mount(None, "/", None, MS_REC | MS_PRIVATE)
                # Directories to cover with an empty read-only tmpfs: the ones asked for
                # (by default the scorer's working directory: the project, its data and
                # runs) and, when the candidate gets its own uid, any directory on the way to
                # Python's own tree that others cannot enter (pyenv under /root). Python's
                # tree is lifted out first and put back at the same path, so sys.path stays
                # valid and the rest of the covered directory stays out of sight.
                needed = sorted({os.path.realpath(p) for p in
                                 (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)})
                needed = [p for p in needed if not any(p.startswith(q + os.sep) for q in needed)]
                roots = set()
                for p in needed if drop else ():
                    a = blocked_ancestor(p)
                    if a is not None and a != p:
                        roots.add(a)
                for h in job["hide"]:
                    inside_tmp = any(h == t or h.startswith(t + os.sep) for t in ("/tmp", "/var/tmp", "/dev/shm"))
                    inside_python = any(h == p or h.startswith(p + os.sep) for p in needed)
                    if os.path.isdir(h) and h != "/" and not inside_tmp and not inside_python:
                        roots.add(h)
                roots = [r for r in sorted(roots) if not any(r.startswith(q + os.sep) for q in roots)]
                hide = {r: [p for p in needed if p.startswith(r + os.sep)] for r in roots}
                for mp in mountpoints():
                    if mp == "/proc" or mp.startswith("/proc/"):
                        continue
                    try:
                        mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
                    except OSError as e:
                        if mp == "/" or e.errno not in (errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOENT):
                            raise
                tmpfs_opts = f"size={job['tmpfs_bytes']},mode=1777"
                for d in ("/tmp", "/var/tmp", "/dev/shm"):
                    if os.path.isdir(d):
                        mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_opts)
                stage = "/tmp/.stage"
                for i, (ancestor, paths) in enumerate(sorted(hide.items())):
                    staged = []
                    for j, p in enumerate(paths):
                        s = f"{stage}/{i}-{j}"
                        os.makedirs(s)
                        mount(p, s, None, MS_BIND | MS_REC)
                        staged.append((s, p))
                    mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
                    for s, p in staged:
                        os.makedirs(p, exist_ok=True)
                        mount(s, p, None, MS_MOVE)
                        os.rmdir(s)
                    mount(None, ancestor, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
                if os.path.isdir(stage):
                    os.rmdir(stage)
                workdir = "/tmp/work"
                os.mkdir(workdir, 0o700)
                if drop:
                    os.chown(workdir, uid, gid)
                private_fs = True
                iso["filesystem"] = "read-only mounts; private tmpfs on /tmp (cwd /tmp/work), /var/tmp, /dev/shm"
                iso["hidden"] = sorted(hide)
            except OSError as e:
                iso["filesystem"] = f"shared (mount setup failed: {e})"
            # The new PID namespace holds our children, not us: fork its init, which forks
            # the harness. When that init exits (the harness is done, or the scorer killed
            # our process group) the kernel kills everything left in the namespace,
            # daemons that left the process group included.
            os.chdir(workdir)
            init = os.fork()
            if init:
                wait_and_mirror(init)
            libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # the outer process dies: so does the namespace
            in_pidns = True
            try:  # a /proc that shows only the namespace's processes
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:
                pass
            harness = os.fork()
            if harness:
                wait_and_mirror(harness)
            me["pid"] = os.getpid()
            iso["processes"] = "own PID namespace (all killed with it)"
        else:
            iso["namespaces"] = f"none (unshare refused: {os.strerror(ctypes.get_errno())})"

    can_drop = drop and (private_fs or all(blocked_ancestor(p) is None for p in (sys.prefix, sys.base_prefix)))
    strong = iso["network"].startswith("own namespace") and private_fs and in_pidns and (can_drop or not root)
    if job["require_strong"] and not strong:
        report("isolation_unavailable",
               f"strong isolation unavailable ({iso}); run the scorer as root or where user namespaces "
               "are allowed, or set require_strong=False to accept Python audit hooks")

    # 2. Limits, hard limits included, so the candidate cannot raise them again.
    def limit(which, soft, hard=None):
        resource.setrlimit(which, (soft, soft if hard is None else hard))

    limit(resource.RLIMIT_CPU, job["cpu_seconds"], job["cpu_seconds"] + 1)
    limit(resource.RLIMIT_FSIZE, job["file_size_bytes"])
    limit(resource.RLIMIT_NOFILE, max(job["max_open_files"], fd + 1))
    # With a private uid the kernel counts exactly this candidate's processes. Otherwise
    # (same uid as the scorer, or a user namespace on kernels that count per namespace)
    # allow what this uid already ran plus the allowance.
    limit(resource.RLIMIT_NPROC, job["max_processes"] + (0 if can_drop else nproc_base))
    limit(resource.RLIMIT_AS, job["memory_bytes"])

    # 3. Identity: a private uid with no groups, no capabilities, no way back up.
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # set-uid programs no longer raise privileges
    if can_drop:
        if not private_fs:
            os.chown(workdir, uid, gid)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # root -> non-root: every capability goes too
        iso["uid"] = f"private uid {uid} (RLIMIT_NPROC enforced)"
    elif not root:
        iso["uid"] = "the scorer's (not root)"
    else:
        iso["uid"] = "root (RLIMIT_NPROC not enforced for root)"

    class CapHeader(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class CapData(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    if not root or not can_drop:  # (a root -> non-root setuid already cleared them)
        for cap in range(64):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: gone for good, also across exec
        libc.capset(ctypes.byref(CapHeader(0x20080522, 0)), ctypes.byref((CapData * 2)()))
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/local/bin:/usr/bin:/bin",
                       "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})

    # 4. Weak mode only: Python audit hooks (PEP 578; cannot be removed once added, but
    #    not a security boundary either).
    class SandboxViolation(PermissionError):
        pass

    if not strong:
        iso["guards"] = "Python audit hooks (weak: not a security boundary)"
        top = os.path.realpath(workdir)
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        refused = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
                   "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                   "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen",
                   "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "os.chroot"}
        path_events = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.link",
                       "os.symlink", "os.truncate", "os.utime", "os.setxattr", "os.removexattr", "shutil.rmtree"}
        refused_imports = {"_posixsubprocess", "_ctypes", "ctypes"}

        def inside(p):
            if isinstance(p, int):
                return True
            try:
                real = os.path.realpath(os.fsdecode(p))
            except (TypeError, ValueError):
                return False
            return real == top or real.startswith(top + os.sep) or real == "/dev/null"

        def hook(event, args):
            if event in refused:
                if event == "os.kill" and args and args[0] == os.getpid():
                    return
                raise SandboxViolation(f"sandbox: {event} is not allowed")
            if event == "import" and args and args[0] in refused_imports:
                raise SandboxViolation(f"sandbox: import of {args[0]} is not allowed")
            if event == "open" and len(args) >= 3:
                path, mode, oflags = args[0], args[1], args[2]
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                    (isinstance(oflags, int) and oflags & write_flags)
                if writing and not inside(path):
                    raise SandboxViolation(f"sandbox: writing {path!r} outside the working directory")
            elif event in path_events:
                for p in args[:2] if event in ("os.rename", "os.link", "os.symlink") else args[:1]:
                    if not inside(p):
                        raise SandboxViolation(f"sandbox: {event} on {p!r} outside the working directory")

        sys.addaudithook(hook)

    # 5. The candidate, then the tests, in one namespace.
    program, tests = job.pop("program"), job.pop("tests")
    for name, text in (("<candidate>", program), ("<tests>", tests)):  # source lines in tracebacks
        linecache.cache[name] = (len(text), None, text.splitlines(True), name)

    def classify(exc, phase):
        tb = "".join(traceback.format_exception(exc))[-3000:]
        code = exc.errno if isinstance(exc, OSError) else None
        if isinstance(exc, MemoryError):
            return "memory", tb
        if isinstance(exc, SyntaxError) and phase == "compile":
            return "syntax_error", tb
        if isinstance(exc, SandboxViolation):
            return "forbidden", tb
        if code in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
            return "output_limit", tb
        if code == errno.EAGAIN:  # fork/clone refused under RLIMIT_NPROC
            return "process_limit", tb
        if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
            return "process_limit", tb
        if code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENETUNREACH, errno.ENETDOWN,
                    errno.EADDRNOTAVAIL, errno.ECONNREFUSED, errno.EHOSTUNREACH):
            return "forbidden", tb
        if isinstance(exc, SystemExit):
            return "crashed", f"the {phase} exited early (SystemExit {exc.code!r})"
        if phase == "tests":
            return "tests_failed", tb
        return "crashed", tb

    try:
        compiled = (compile(program, "<candidate>", "exec"), compile(tests, "<tests>", "exec"))
    except BaseException as e:  # noqa: BLE001
        report(*classify(e, "compile"))
    namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
    phase = "program"
    try:
        exec(compiled[0], namespace)
        phase = "tests"
        exec(compiled[1], namespace)
    except BaseException as e:  # noqa: BLE001 - every way out is a verdict
        report(*classify(e, phase))
    report("ok")


_CHILD_SOURCE = inspect.getsource(_child_main) + "\n_child_main()\n"


# --------------------------------------------------------------------------------------
# The scorer's side.
# --------------------------------------------------------------------------------------
class _UidPool:
    """Hands out uids from a private range, one lock file each, so that two sandboxes (in
    this process or another on the same host) never share a uid: a shared uid would share
    RLIMIT_NPROC's count, and the clean-up sweep of one would kill the other's processes."""

    def __init__(self, base: int, count: int, lock_dir: str):
        self.base, self.count, self.lock_dir = base, count, lock_dir
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        os.chmod(lock_dir, 0o700)

    def acquire(self) -> tuple[int, int]:
        """(uid, lock fd). Waits (briefly, repeatedly) when every uid is in use."""
        deadline = time.monotonic() + 60
        while True:
            start = random.randrange(self.count)
            for k in range(self.count):
                uid = self.base + (start + k) % self.count
                lock = os.open(os.path.join(self.lock_dir, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(lock)
                    continue
                return uid, lock
            if time.monotonic() > deadline:
                raise SandboxError(f"no free sandbox uid in [{self.base}, {self.base + self.count}) after 60 s; "
                                   "raise SandboxConfig.uid_count or run fewer sandboxes at once")
            time.sleep(0.05)

    @staticmethod
    def release(lock: int) -> None:
        os.close(lock)  # closing drops the flock


def _kill_uid(uid: int) -> int:
    """SIGKILL every process whose real or effective uid is ``uid``; repeat until none is left.

    pidfds make this safe against pid reuse: the uid is read after the pidfd pins the process.
    """
    killed_total = 0
    for _ in range(100):
        killed = 0
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                pidfd = os.pidfd_open(int(name))
            except OSError:
                continue
            try:
                with open(f"/proc/{name}/status") as f:
                    status = f.read()
                uids, state = [], ""
                for line in status.splitlines():
                    if line.startswith("Uid:"):
                        uids = [int(x) for x in line.split()[1:3]]
                    elif line.startswith("State:"):
                        state = line.split()[1]
                if uid in uids and state not in ("Z", "X"):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    killed += 1
            except (OSError, ValueError):
                pass
            finally:
                os.close(pidfd)
        killed_total += killed
        if not killed:
            return killed_total
        time.sleep(0.01)
    return killed_total


def _read_trimmed(path: str, chars: int) -> str:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(chars * 4 + 4)
    except OSError:
        return ""
    text = head.decode("utf-8", errors="replace")
    if len(text) > chars or size > len(head):
        return text[:chars] + f"\n...[trimmed; {size} bytes in all]"
    return text


class Sandbox:
    """Runs candidates under :class:`SandboxConfig`; thread-safe; :meth:`run_many` for batches."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.python = self.config.python or sys.executable
        if not self.python or not os.path.exists(self.python):
            raise SandboxError(f"interpreter {self.python!r} not found; set SandboxConfig.python")
        self._root = os.geteuid() == 0
        hide = [os.path.realpath(p) for p in self.config.hide_paths]
        if self.config.hide_cwd and os.path.realpath(os.getcwd()) != "/":
            hide.append(os.path.realpath(os.getcwd()))
        self._hide = sorted(set(hide))
        self._uids = None
        if self._root and self.config.drop_privileges:
            self._uids = _UidPool(self.config.uid_base, self.config.uid_count,
                                  os.path.join(tempfile.gettempdir(), "rest-sandbox-uids"))

    # One candidate ------------------------------------------------------------------
    def run(self, program: str, tests: str = "") -> SandboxResult:
        """Run ``program`` then ``tests`` (asserts calling it) in one fresh sandboxed process."""
        cfg = self.config
        uid, lock = (self._uids.acquire() if self._uids else (None, None))
        io_dir = tempfile.mkdtemp(prefix="rest-sandbox-")  # 0700, the scorer's: stdout, stderr, verdict
        try:
            if uid is not None:
                _kill_uid(uid)  # leftovers of a scorer that died mid-run
            work = os.path.join(io_dir, "work")  # cwd only if the mount namespace is refused
            os.mkdir(work, 0o700)
            if uid is not None:
                os.chmod(io_dir, 0o711)  # a private uid may reach ``work`` (the child chowns it) and nothing else
            nonce = secrets.token_hex(16)
            job = {"nonce": nonce, "program": program, "tests": tests, "uid": uid, "gid": uid,
                   "cpu_seconds": cfg.cpu_seconds, "memory_bytes": cfg.memory_bytes,
                   "file_size_bytes": cfg.file_size_bytes, "tmpfs_bytes": cfg.tmpfs_bytes,
                   "max_processes": cfg.max_processes, "max_open_files": cfg.max_open_files,
                   "require_strong": cfg.require_strong, "use_namespaces": cfg.use_namespaces,
                   "drop_privileges": cfg.drop_privileges, "hide": self._hide}
            verdict_fd = os.open(os.path.join(io_dir, "verdict"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(verdict_fd, json.dumps(job).encode())
                return self._execute(io_dir, work, verdict_fd, nonce, uid)
            finally:
                os.close(verdict_fd)
        finally:
            if uid is not None:
                _kill_uid(uid)
                self._uids.release(lock)
            shutil.rmtree(io_dir, ignore_errors=True)

    def _execute(self, io_dir: str, work: str, verdict_fd: int, nonce: str, uid: int | None) -> SandboxResult:
        cfg = self.config
        out_path, err_path = os.path.join(io_dir, "stdout"), os.path.join(io_dir, "stderr")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        t0 = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    [self.python, "-I", "-S", "-B", "-c", _CHILD_SOURCE, str(verdict_fd)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=work, env=env,
                    pass_fds=(verdict_fd,), start_new_session=True)
            except OSError as e:
                raise SandboxError(f"cannot start {self.python!r}: {e}") from e
            timed_out = False
            try:
                rc = proc.wait(timeout=cfg.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if uid is not None:
                    _kill_uid(uid)
                rc = proc.wait()
        wall = time.monotonic() - t0
        stdout, stderr = _read_trimmed(out_path, cfg.output_chars), _read_trimmed(err_path, cfg.output_chars)
        verdict = self._read_verdict(verdict_fd, nonce)
        return self._result(verdict, timed_out, rc, wall, stdout, stderr, err_path)

    @staticmethod
    def _read_verdict(fd: int, nonce: str) -> dict | None:
        os.lseek(fd, 0, 0)
        raw = os.read(fd, 1 << 16)
        try:
            v = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(v, dict) or v.get("nonce") != nonce or v.get("status") not in REASONS:
            return None  # missing, truncated, or written by the candidate: not a verdict
        return v

    def _result(self, verdict, timed_out, rc, wall, stdout, stderr, err_path) -> SandboxResult:
        def res(reason, detail, iso=None):
            return SandboxResult(passed=reason == "ok", reason=reason, detail=detail, wall_seconds=round(wall, 4),
                                 stdout=stdout, stderr=stderr, returncode=rc, isolation=iso or {})

        if verdict is not None:
            return res(verdict["status"], verdict.get("detail", ""), verdict.get("isolation"))
        if timed_out:
            return res("timeout", f"killed after {self.config.wall_seconds:g} s of wall-clock time")
        if rc is not None and rc > 128:  # the namespace's init reports a signal as 128 + its number
            rc = -(rc - 128)
        if rc == -signal.SIGXCPU:
            return res("cpu_limit", f"SIGXCPU after {self.config.cpu_seconds} s of CPU time")
        if rc == -signal.SIGKILL:
            return res("cpu_limit", "SIGKILL: the CPU hard limit (the candidate ignored SIGXCPU) or out of memory")
        if rc == -signal.SIGXFSZ:
            return res("output_limit", f"SIGXFSZ: wrote past {self.config.file_size_bytes} bytes "
                       "(stdout, stderr or a file)")
        tail = _read_trimmed(err_path, 1 << 16)
        if "MemoryError" in tail:
            return res("memory", "MemoryError before a verdict could be written")
        how = f"signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        return res("crashed", f"exited ({how}) without a verdict (os._exit, a closed descriptor or a crash)")

    # Many candidates -----------------------------------------------------------------
    def run_many(self, jobs: Iterable[tuple[str, str]], workers: int | None = None) -> list[SandboxResult]:
        """Run ``(program, tests)`` pairs, ``workers`` at a time; results in input order."""
        jobs = list(jobs)
        n = min(workers or self.config.workers, max(1, len(jobs)))
        if n == 1:
            return [self.run(p, t) for p, t in jobs]
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="sandbox") as pool:
            return list(pool.map(lambda pt: self.run(*pt), jobs))

    def probe(self) -> SandboxResult:
        """Run an empty program: its ``isolation`` says what this host allows."""
        return self.run("pass", "")


_DEFAULT: dict[SandboxConfig, Sandbox] = {}
_DEFAULT_LOCK = threading.Lock()


def run_tests(programs: Sequence[str], tests: Sequence[str], config: SandboxConfig | None = None,
              workers: int | None = None) -> list[SandboxResult]:
    """Convenience: run ``programs[i]`` against ``tests[i]`` with a shared :class:`Sandbox`."""
    if len(programs) != len(tests):
        raise ValueError(f"{len(programs)} programs but {len(tests)} test blocks; give one test block per program")
    cfg = config or SandboxConfig()
    with _DEFAULT_LOCK:
        box = _DEFAULT.get(cfg) or _DEFAULT.setdefault(cfg, Sandbox(cfg))
    return box.run_many(zip(programs, tests), workers=workers)

