"""Every command the docs show works: README.md, docs/deploy.md and each `--help`'s examples.

The fenced ``bash`` blocks are read command by command. Those that can run here do, in a
scratch copy of the repository's layout: ``python -m rest config`` and ``validate``,
``pipeline.py compile`` and every ``--help``, and the cluster commands (``upload``, ``run``,
``schedule``, ``runs``) against the loopback KFP stand-in. The rest (full runs, docker,
kubectl against a cluster) are at least parsed by the real argparse parser, with the
run config resolved (so an unknown flag or a bad value fails), and the files they name must
exist. A command of a kind this test does not know fails it: add a rule when the docs grow.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import pipeline
from rest_kfp import cli as rest_cli
from rest_kfp import kfp_cli
from tests.conftest import ROOT
from tests.kfp_standin import API, KfpStandin

DOCS = ("README.md", "docs/deploy.md")
# Commands that need a cluster, docker or minutes of compute: parsed, not run.
PARSE_ONLY = {"run-local", "promote", "doctor", "bootstrap", "reward-model"}
# Shell commands whose effect is outside this machine; their repository paths must exist.
EXTERNAL = {"docker", "kubectl", "kustomize", "git", "printf", "openssl", "bash", "cd", "export", "cp"}


def bash_commands(path: str) -> list[tuple[int, str]]:
    """(line number, command) for each command of the fenced bash blocks, continuations joined."""
    out, block, pending, start = [], False, "", 0
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("```"):
                block = line.strip() == "```bash"
                continue
            if not block:
                continue
            text = line.rstrip("\n")
            if not pending:
                start = n
            if text.rstrip().endswith("\\"):
                pending += text.rstrip()[:-1] + " "
                continue
            command, pending = (pending + text).strip(), ""
            if command and not command.startswith("#"):
                out.append((start, command))
    return out


def epilog_commands() -> list[tuple[str, str]]:
    """The ``python ...`` examples of pipeline.py's description and of every subcommand's --help."""
    parser = pipeline.build_parser()
    texts = {"pipeline.py --help": parser.description}
    sub = next(a for a in parser._actions if a.choices and "run-local" in a.choices)
    texts.update({f"{name} --help": p.epilog or "" for name, p in sub.choices.items()})
    out = []
    for where, text in texts.items():
        joined = re.sub(r"\\\n\s*", " ", text or "")
        out += [(where, m.group(0).strip()) for m in re.finditer(r"python pipeline\.py [^\n]+", joined)]
    return out


def pieces(command: str) -> list[list[str]]:
    """The simple commands of ``a && b``, as tokens with comments dropped."""
    tokens = shlex.split(command, comments=True)
    parts, cur = [], []
    for t in tokens:
        if t in ("&&", ";", "|"):
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    return [p for p in parts + [cur] if p]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch directory shaped like the repository (its inputs linked, outputs land here)."""
    d = tmp_path_factory.mktemp("docs")
    for name in ("data", "models", "manifests", "containers", "scripts", "configs", "tools", "bench", "pyproject.toml"):
        os.symlink(os.path.join(ROOT, name), d / name)
    shutil.copy(os.path.join(ROOT, "manifests", "cluster-config.example.yaml"), d / "cluster.yaml")
    return d


@pytest.fixture
def kfp(workdir, monkeypatch):
    """The KFP API stand-in, as KFP_HOST (what the docs tell the user to export)."""
    import kfp.client.client as kc

    monkeypatch.setattr(kc.Client, "_LOCAL_KFP_CONTEXT", str(workdir / "no-context.json"))
    for var in ("KFP_NAMESPACE", "KFP_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with KfpStandin() as server:
        monkeypatch.setenv("KFP_HOST", server.url)
        yield server


def parse_pipeline(argv: list[str], where: str):
    """Parse with pipeline.py's real parser and resolve the run config (what a run would use)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = pipeline.build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `python pipeline.py {shlex.join(argv)}` does not parse: {err.getvalue()} ({e})")
    if args.command in ("run-local", "compile") + kfp_cli.PACKAGE_COMMANDS:
        pipeline.resolve_config(args)  # unknown --config file or a bad value raises here
    return args


def parse_rest(argv: list[str], where: str):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return rest_cli.build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `python -m rest {shlex.join(argv)}` does not parse: {err.getvalue()} ({e})")


# Runs pipeline.py commands one after another in one fresh interpreter. Not in-process: kfp
# calls inspect.stack() for every task setting, which under pytest's deep stack and many
# loaded modules makes one compile with cluster settings take 20 s instead of 1 s.
DRIVER = """
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[1])
import kfp.client.client as kc
kc.Client._LOCAL_KFP_CONTEXT = "no-context.json"  # the user's own KFP context stays out
import pipeline
results = []
for argv in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = pipeline.main(argv)
        except SystemExit as e:
            rc = e.code
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def run_pipeline_commands(batch: list[tuple[str, list[str]]], workdir, kfp_url: str) -> None:
    """Run ``python pipeline.py ARGV`` for each (where, ARGV) in ``workdir``; each must exit 0."""
    import json

    env = {**os.environ, "KFP_HOST": kfp_url}
    env.pop("KFP_NAMESPACE", None)
    env.pop("KFP_TOKEN", None)
    res = subprocess.run([sys.executable, "-c", DRIVER, ROOT], input=json.dumps([a for _, a in batch]),
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for (where, argv), r in zip(batch, json.loads(res.stdout.strip().splitlines()[-1])):
        assert r["rc"] == 0, f"{where}: `python pipeline.py {shlex.join(argv)}` exited {r['rc']}: {r['err'][-2000:]}"


def check_paths(tokens: list[str], where: str) -> None:
    for t in tokens:
        value = t.split("=", 1)[-1]
        if re.match(r"^(manifests|containers|scripts|data|models|docs|bench|tools)/", value) and "*" not in value:
            assert os.path.exists(os.path.join(ROOT, value)), f"{where}: {value} does not exist"


def build_sh(tokens: list[str], where: str) -> None:
    """containers/build.sh with DRY_RUN=1: prints the docker commands, and the image name last."""
    env = {**os.environ, "DRY_RUN": "1"}
    while tokens and re.match(r"^[A-Z_]+=", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    if tokens and tokens[0] == "bash":  # `bash containers/build.sh ...`, as users type it
        tokens = tokens[1:]
    res = subprocess.run(["bash", *tokens], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{where}: {res.stderr}"
    assert re.match(r"^[\w.\-/:<>]+:[\w.\-]+$", res.stdout.strip().splitlines()[-1]), f"{where}: {res.stdout}"


def test_docs_have_the_commands_this_test_expects():
    readme = [c for _, c in bash_commands("README.md")]
    deploy = [c for _, c in bash_commands("docs/deploy.md")]
    assert any(c.startswith("python pipeline.py promote --model-name") for c in readme)
    assert any(c.startswith("python pipeline.py run ") for c in deploy)
    assert not any("grow_steps=" in c for c in readme + deploy)  # G is not a run parameter
    assert len(epilog_commands()) >= 15


@pytest.mark.parametrize("doc", DOCS)
def test_every_doc_command_parses_or_runs(doc, workdir, kfp, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    ran, batch = [], []
    for line, command in bash_commands(doc):
        where = f"{doc}:{line}"
        if "$(containers/build.sh" in command:  # export REST_IMAGE=$(containers/build.sh | tail -n1)
            build_sh(["containers/build.sh"], where)
            continue
        for tokens in pieces(command):
            redirect = None
            if ">" in tokens:  # `python -m rest config > my.yaml`
                redirect = tokens[tokens.index(">") + 1]
                tokens = tokens[:tokens.index(">")]
            head = tokens[0]
            if tokens[:2] == ["python", "pipeline.py"]:
                argv = tokens[2:]
                if "--help" in argv or "-h" in argv:
                    with pytest.raises(SystemExit) as e:
                        pipeline.main(argv)
                    assert e.value.code == 0, where
                    capsys.readouterr()
                    continue
                args = parse_pipeline(argv, where)
                if args.command not in PARSE_ONLY:
                    batch.append((where, argv))
                    ran.append((where, args.command, None))
            elif tokens[:3] == ["python", "-m", "rest"]:
                args = parse_rest(tokens[3:], where)
                if args.command in PARSE_ONLY:
                    continue
                capsys.readouterr()
                rc = rest_cli.main(tokens[3:])
                out = capsys.readouterr()
                assert rc == 0, f"{where}: `{command}` exited {rc}: {out.err[-2000:]}"
                if redirect:
                    (workdir / redirect).write_text(out.out, encoding="utf-8")
                ran.append((where, args.command, out.out))
            elif head == "python" and re.match(r"^(tools|bench)/[\w/]+\.py$", tokens[1]):
                # A script that reads a finished run or measures for minutes: it exists and its
                # --help works (argparse: the arguments shown are the ones it takes).
                r = subprocess.run([sys.executable, tokens[1], "--help"], cwd=ROOT, capture_output=True, text=True)
                assert r.returncode == 0, f"{where}: `python {tokens[1]} --help` exited {r.returncode}: {r.stderr[-1000:]}"
            elif tokens[:3] == ["python", "-m", "pytest"]:  # this very suite (or a marked part of it)
                check_paths(tokens, where)
            elif any(t == "containers/build.sh" for t in tokens[:3]):  # VARIANT=cuda containers/build.sh
                build_sh(tokens, where)
            elif head in EXTERNAL:
                check_paths(tokens + ([redirect] if redirect else []), where)
                if head == "bash":
                    assert os.path.isfile(os.path.join(ROOT, tokens[1])), where
            else:
                pytest.fail(f"{where}: no rule for `{command}`; add one to tests/test_docs.py")
    run_pipeline_commands(batch, workdir, kfp.url)
    kinds = [k for _, k, _ in ran]
    # What ran reached the KFP API: one POST per run / schedule / upload command.
    assert len(kfp.find("POST", f"{API}/runs")) == kinds.count("run")
    assert len(kfp.find("POST", f"{API}/recurringruns")) == kinds.count("schedule")
    assert len(kfp.find("POST", f"{API}/pipelines/upload")) == kinds.count("upload")
    (rr,) = kfp.find("POST", f"{API}/recurringruns")
    assert rr["body"]["runtime_config"]["parameters"] == {"initial_policy": "models:/rest-de-en@champion"}
    if doc == "README.md":
        assert {"config", "validate", "run", "schedule"} <= set(kinds), ran
    else:
        assert {"compile", "upload", "run", "schedule", "runs"} <= set(kinds), ran
        assert (workdir / "rest-pipeline.yaml").is_file()
        params = [r["body"]["runtime_config"]["parameters"] for r in kfp.find("POST", f"{API}/runs")]
        assert {"train": "s3://rest/data/train.tsv", "valid": "s3://rest/data/valid.tsv",
                "test": "s3://rest/data/test.tsv"} in params


def test_every_help_example_parses():
    for where, command in epilog_commands():
        parse_pipeline(shlex.split(command)[2:], where)


def test_every_subcommand_help_works(capsys):
    parser = pipeline.build_parser()
    sub = next(a for a in parser._actions if a.choices and "run-local" in a.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            pipeline.main([name, "--help"])
        assert e.value.code == 0
        assert "usage: python pipeline.py " + name in capsys.readouterr().out
    for name in ("config", "bootstrap", "reward-model", "validate"):
        with pytest.raises(SystemExit) as e:
            rest_cli.main([name, "--help"])
        assert e.value.code == 0


def test_an_unknown_flag_fails_the_parse_check():
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse_pipeline(["promote", "--model", "rest-de-en"], "probe")
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse_pipeline(["run-local", "--grow-steps", "2"], "probe")


def test_bad_value_message_in_readme_is_the_real_one(capsys):
    """The README quotes the error for falling thresholds: the CLI gives exactly that."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        quoted = re.search(r"`(filter\.thresholds: must rise[^`]*)`", f.read()).group(1)
    assert pipeline.main(["compile", "--filter.thresholds", "0.7,0.6", "--output", os.devnull]) == 2
    assert quoted in capsys.readouterr().err


def test_every_docs_page_that_is_pointed_to_exists():
    """Manifests, docs and code name pages under docs/: each must be there (docs/deploy.md was not)."""
    import glob

    files = glob.glob(os.path.join(ROOT, "manifests", "**", "*.yaml"), recursive=True) + \
        glob.glob(os.path.join(ROOT, "*.md")) + glob.glob(os.path.join(ROOT, "docs", "*.md")) + \
        glob.glob(os.path.join(ROOT, "rest", "*.py")) + [os.path.join(ROOT, "pipeline.py")]
    named = set()
    for path in files:
        with open(path, encoding="utf-8") as f:
            named |= {(os.path.relpath(path, ROOT), m) for m in re.findall(r"\bdocs/[\w.\-/]+\.md", f.read())}
    assert ("manifests/base/kustomization.yaml", "docs/deploy.md") in named
    missing = sorted((src, page) for src, page in named if not os.path.isfile(os.path.join(ROOT, page)))
    assert not missing, missing
