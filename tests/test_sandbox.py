"""The sandbox for untrusted candidates: hostile programs get reward 0 with a reason, the
run goes on, and nothing outside the candidate's temporary directory changes.

Every hostile candidate is aimed at a sentinel directory inside the repository (an
ignored path under runs/) and one in pytest's tmp dir; both are hashed before and after.
Destructive candidates only ever target those sentinels (or open a project file for
appending without writing), so a broken sandbox fails the test without damaging anything.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import uuid

import pytest

from rest.rewards.sandbox import REASONS, Sandbox, SandboxConfig, SandboxResult, run_tests

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A checkout under /tmp (CI clones often live there) lies beneath the sandbox's own fresh
# tmpfs: the candidate cannot see it at all, so a write to it fails as "crashed" (the path
# does not exist) instead of "forbidden" (a read-only mount) — nothing reaches it either way.
REPO_INVISIBLE = any(REPO == t or REPO.startswith(t + os.sep) for t in ("/tmp", "/var/tmp", "/dev/shm"))
REFUSED = ("forbidden", "crashed") if REPO_INVISIBLE else ("forbidden",)
# The repository stays visible (read-only) here, so that the tests show writes to it are
# refused rather than merely aimed at a path that does not exist; see test_project_is_hidden
# for the default, which hides the scorer's working directory altogether.
CFG = SandboxConfig(wall_seconds=2.5, cpu_seconds=1, memory_bytes=256 << 20, max_processes=8, workers=2,
                    hide_cwd=False)


@pytest.fixture(scope="module")
def box():
    return Sandbox(CFG)


def _tree_digest(path: str) -> str:
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        h.update(d.encode())
        for f in sorted(files):
            p = os.path.join(d, f)
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}".encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


@pytest.fixture
def sentinels(tmp_path):
    """Two sentinel trees (repository and pytest tmp) that no candidate may change."""
    made = []
    for base in (os.path.join(REPO, "runs", f".sandbox-sentinel-{uuid.uuid4().hex[:8]}"), str(tmp_path / "sentinel")):
        os.makedirs(os.path.join(base, "sub"))
        for name in ("keep.txt", "sub/keep.txt"):
            with open(os.path.join(base, name), "w") as f:
                f.write("do not touch\n")
        made.append(base)
    before = [_tree_digest(p) for p in made]
    project_file = os.path.join(REPO, "rest", "rewards", "sandbox.py")
    project_before = os.stat(project_file).st_mtime_ns
    yield {"repo": made[0], "tmp": made[1], "project_file": project_file}
    try:
        assert [_tree_digest(p) for p in made] == before, "a candidate changed a sentinel outside its directory"
        assert os.stat(project_file).st_mtime_ns == project_before
    finally:
        shutil.rmtree(made[0], ignore_errors=True)


def _sandbox_processes() -> list[int]:
    """Pids still running under a uid of the sandbox range (there must be none after a run)."""
    left = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            uid = int(line.split()[1])
                            if CFG.uid_base <= uid < CFG.uid_base + CFG.uid_count:
                                left.append(int(name))
                        elif line.startswith("State:") and line.split()[1] == "Z":
                            break
            except OSError:
                pass
    return left


def test_good_and_wrong_candidates(box):
    good = box.run("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n")
    assert good.passed and good.reason == "ok", good
    wrong = box.run("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n")
    assert not wrong.passed and wrong.reason == "tests_failed"
    assert "AssertionError" in wrong.detail and "add(2, 3) == 5" in wrong.detail  # the failing line is shown
    assert box.run("def add(a, b:\n", "").reason == "syntax_error"
    assert box.run("raise ValueError('boom')", "").reason == "crashed"


def test_isolation_report(box):
    iso = box.probe().isolation
    assert "net" in iso["namespaces"] and "pid" in iso["namespaces"], iso
    assert iso["filesystem"].startswith("read-only")
    if os.geteuid() == 0:  # root must not run candidates as root: RLIMIT_NPROC would not apply
        assert iso["uid"].startswith("private uid"), iso


def test_project_is_hidden_by_default(sentinels):
    hidden = Sandbox(SandboxConfig(wall_seconds=2.5, cpu_seconds=1, hide_paths=(REPO,)))
    program = ("import os, sys\n"
               f"assert not os.path.exists({REPO!r}) or os.listdir({REPO!r}) == [], os.listdir({REPO!r})\n"
               f"sys.path.insert(0, {REPO!r})\n"
               "try:\n    import rest\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('imported')\n")
    r = hidden.run(program, "")
    assert r.passed, r
    assert REPO in r.isolation["hidden"] or REPO_INVISIBLE  # under /tmp the fresh tmpfs covers it already
    r = hidden.run(f"open({os.path.join(REPO, 'README.md')!r}, 'a')\n", "")
    assert r.reason in ("forbidden", "crashed") and not r.passed


def test_environment_is_clean(box, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "sentinel-token")
    program = ("import os, sys\n"
               "print(sorted(os.environ))\n"
               "assert not any(k.startswith(('AWS_', 'MLFLOW_')) for k in os.environ)\n"
               f"assert not any(p.startswith({REPO!r}) for p in sys.path), sys.path\n"
               "assert os.getcwd() == os.environ['HOME'] and os.listdir('.') == []\n")
    r = box.run(program, "")
    assert r.passed, r
    assert "sentinel" not in r.stdout


HOSTILE = {
    "loop_forever": ("while True:\n    pass\n", {"cpu_limit", "timeout"}),
    "sleep_forever": ("import time\ntime.sleep(1000)\n", {"timeout"}),
    "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", {"process_limit", "timeout"}),
    "fork_bomb_persistent": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                             {"timeout", "cpu_limit"}),
    "allocate_10gb": ("x = bytearray(10 * 1024 ** 3)\n", {"memory"}),
    "allocate_gradually": ("x = []\nwhile True:\n    x.append(b'x' * (64 << 20))\n", {"memory"}),
    "flood_stdout": ("while True:\n    print('x' * 65536)\n", {"output_limit"}),
    "import_project": ("import rest\n", {"crashed"}),
    "fake_success_exit": ("import os\nos._exit(0)\n", {"crashed"}),
    "fake_success_systemexit": ("raise SystemExit(0)\n", {"crashed"}),
    "fake_verdict": ("import os, json\nfor fd in range(3, 64):\n    try:\n        os.write(fd, json.dumps("
                     "{'status': 'ok', 'nonce': 'x'}).encode())\n    except OSError:\n        pass\nos._exit(0)\n",
                     {"crashed"}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_candidate_scores_zero(box, sentinels, name):
    program, reasons = HOSTILE[name]
    r = box.run(program, "assert True\n")
    assert not r.passed and r.reason in reasons, (name, r.reason, r.detail[-500:])
    assert r.wall_seconds < CFG.wall_seconds + 2
    assert _sandbox_processes() == []


def test_writes_outside_the_directory_change_nothing(box, sentinels):
    targets = [os.path.join(sentinels["repo"], "keep.txt"), os.path.join(sentinels["tmp"], "keep.txt"),
               os.path.join(sentinels["repo"], "new.txt"), os.path.join(sentinels["tmp"], "new.txt")]
    for target in targets:
        r = box.run(f"with open({target!r}, 'w') as f:\n    f.write('pwned')\n", "")
        assert not r.passed, target
        assert r.reason in ("forbidden", "crashed"), r  # refused, or the path is not even visible
    # Appending to the project's own source (nothing is written even if the open succeeded).
    r = box.run(f"open({sentinels['project_file']!r}, 'a').close()\n", "")
    assert r.reason in REFUSED, r


def test_relative_delete_and_tamper_are_refused(box, sentinels):
    # From its working directory the candidate climbs with ../../ to the repository sentinel.
    program = ("import os, shutil\n"
               f"target = os.path.relpath({sentinels['repo']!r}, os.getcwd())\n"
               "assert target.startswith('../'), target\n"
               "os.remove(os.path.join(target, 'keep.txt'))\n")
    r = box.run(program, "")
    assert r.reason in REFUSED, r
    r = box.run(f"import shutil, os\nshutil.rmtree(os.path.relpath({sentinels['repo']!r}))\n", "")
    assert r.reason in REFUSED, r
    # The project is readable (it is on a read-only mount) but not writable, even on purpose.
    tamper = (f"import sys\nsys.path.insert(0, {REPO!r})\nimport os\n"
              f"open(os.path.join({REPO!r}, 'rest', '__init__.py'), 'a').close()\n")
    assert box.run(tamper, "").reason in REFUSED


def test_no_network_even_to_localhost(box):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    try:
        r = box.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n", "")
        assert not r.passed and r.reason == "forbidden", r
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


def test_escaped_daemon_is_killed(box, sentinels):
    # The child leaves the process group (setsid) and would write later: it must die with the run.
    target = os.path.join(sentinels["tmp"], "late.txt")
    program = ("import os, time\n"
               "if os.fork() == 0:\n"
               "    os.setsid()\n"
               "    time.sleep(1.5)\n"
               f"    open({target!r}, 'w').write('late')\n"
               "    os._exit(0)\n")
    r = box.run(program, "")
    assert r.passed  # the candidate itself is harmless...
    assert _sandbox_processes() == []  # ...and its daemon did not outlive it


def test_batch_goes_on_past_a_hostile_candidate(box):
    jobs = [("while True:\n    pass\n", "assert True"),
            ("def f(x):\n    return 2 * x\n", "assert f(21) == 42"),
            ("x = bytearray(10 * 1024 ** 3)\n", "assert True"),
            ("def f(x):\n    return x\n", "assert f(21) == 42")]
    results = box.run_many(jobs)
    assert [r.passed for r in results] == [False, True, False, False]
    assert [r.reason for r in results][1:] == ["ok", "memory", "tests_failed"]
    assert all(isinstance(r, SandboxResult) and r.reason in REASONS for r in results)
    rs = run_tests(["def g():\n    return 1\n", "import os\nwhile True:\n    os.fork()\n"],
                   ["assert g() == 1", "assert True"], config=CFG)
    assert [r.passed for r in rs] == [True, False]


def test_weak_mode_uses_audit_hooks(sentinels):
    weak = Sandbox(SandboxConfig(wall_seconds=2.5, cpu_seconds=1, use_namespaces=False, require_strong=False))
    assert "audit hooks" in weak.probe().isolation.get("guards", "")
    for program in (f"open({os.path.join(sentinels['tmp'], 'keep.txt')!r}, 'w')\n",
                    "import socket\nsocket.socket()\n", "import os\nos.fork()\n",
                    "import subprocess\nsubprocess.run(['true'])\n", "import ctypes\nctypes.CDLL(None)\n"):
        r = weak.run(program, "")
        assert r.reason == "forbidden", (program, r)
    assert weak.run("def f():\n    return 1\n", "assert f() == 1").passed
    strict = Sandbox(SandboxConfig(wall_seconds=2.5, use_namespaces=False, require_strong=True))
    r = strict.run("pass", "")
    assert not r.passed and r.reason == "isolation_unavailable" and "require_strong" in r.detail


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="cpu_seconds"):
        SandboxConfig(cpu_seconds=0)
    with pytest.raises(ValueError, match="64 MiB"):
        SandboxConfig(memory_bytes=1 << 20)
    with pytest.raises(ValueError, match="workers"):
        SandboxConfig(workers=0)
