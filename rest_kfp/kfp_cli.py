"""The cluster half of the CLI: upload, run, schedule and list ReST pipelines on Kubeflow Pipelines.

Built on ``kfp.Client`` (KFP REST API v2beta1). ``pipeline.py`` owns the parser and passes a
``compile_pipeline(path)`` callable, so every command that needs a package compiles the
current code first and a cluster never runs a stale YAML by accident.

The access token (``--token`` / ``$KFP_TOKEN``) is handed to ``kfp.Client`` and nowhere else:
it is never printed, logged or put into an error message.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
import tempfile
import warnings
from typing import Any, Callable

import yaml

DEFAULT_PIPELINE_NAME = "rest-kubeflow"
DEFAULT_EXPERIMENT = "rest"
CHAMPION_PARAM = "initial_policy"  # the pipeline parameter --from-champion sets
DEFAULT_SECRETS = ("rest-s3-credentials",)
DEFAULT_SERVICES = ("rest-minio", "rest-mlflow")
# The subcommands register_commands adds; pipeline.py sends these to dispatch().
CLUSTER_COMMANDS = ("upload", "run", "schedule", "runs", "doctor")
# The ones that compile the pipeline first (they get --config/--cluster-config).
PACKAGE_COMMANDS = ("upload", "run", "schedule")


class KfpCliError(RuntimeError):
    """A cluster command failed; the message says what to check."""


# --------------------------------------------------------------------------- cron

_CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23),
                ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))
_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_NAMES = re.compile(r"^(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT)$", re.I)


def to_kfp_cron(expr: str) -> str:
    """A cron expression in the 6-field form KFP's scheduler wants (seconds first).

    Standard 5-field cron (``"0 3 * * 1"``: minute hour day month weekday) gets a leading
    ``0`` seconds field; 6 fields are checked as they are; ``@daily``-style descriptors and
    ``@every 1h`` pass through (the scheduler, robfig/cron, understands them).
    """
    text = " ".join((expr or "").split())
    if not text:
        raise KfpCliError("cron: empty; give e.g. '0 3 * * *' (daily at 03:00) or '@daily'")
    if text.startswith("@"):
        if text in _CRON_DESCRIPTORS or re.match(r"^@every \d+(\.\d+)?(ns|us|ms|s|m|h)(\d+(ns|us|ms|s|m|h))*$", text):
            return text
        raise KfpCliError(f"cron {expr!r}: unknown descriptor; use one of {', '.join(_CRON_DESCRIPTORS)} or '@every 6h'")
    parts = text.split(" ")
    if len(parts) == 5:
        parts = ["0"] + parts
    elif len(parts) != 6:
        raise KfpCliError(
            f"cron {expr!r} has {len(parts)} fields; give 5 (minute hour day-of-month month day-of-week, "
            f"e.g. '0 3 * * *') or KFP's 6 with seconds first (e.g. '0 0 3 * * *')")
    for value, (name, lo, hi) in zip(parts, _CRON_FIELDS):
        _check_cron_field(value, name, lo, hi, expr)
    return " ".join(parts)


def _check_cron_field(value: str, name: str, lo: int, hi: int, expr: str) -> None:
    for item in value.split(","):
        base, _, step = item.partition("/")
        if step and not step.isdigit():
            raise KfpCliError(f"cron {expr!r}: {name} step {step!r} is not a number")
        if base in ("*", "?"):
            continue
        for bound in base.split("-"):
            if bound.isdigit():
                if not lo <= int(bound) <= hi:
                    raise KfpCliError(f"cron {expr!r}: {name} value {bound} is outside {lo}-{hi}")
            elif not _CRON_NAMES.match(bound):
                raise KfpCliError(f"cron {expr!r}: cannot read {name} field {value!r}")


# --------------------------------------------------------------------------- client

def make_client(host: str | None, namespace: str | None = None, token: str | None = None):
    """A ``kfp.Client`` for ``host``; raises KfpCliError with the fix when there is no host."""
    if not host:
        raise KfpCliError(
            "no KFP host: pass --host or set KFP_HOST, e.g. after "
            "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` use --host http://localhost:8080")
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
        try:
            # namespace != 'kubeflow' makes the client use it as the user namespace and skip
            # the multi-user probe; a token is sent as "Authorization: Bearer ...".
            return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token or None)
        except Exception as e:  # connection refused, TLS, auth: say which host, never the token
            raise KfpCliError(_explain(e, host)) from None


def _explain(e: Exception, host: str) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None) or type(e).__name__
    body = getattr(e, "body", None)
    if status in (401, 403):
        hint = "check --token/KFP_TOKEN and that your profile may use --namespace"
    elif status == 404:
        hint = "check the id/name and --namespace"
    elif status:
        hint = "see the KFP API server logs (kubectl logs -n kubeflow deploy/ml-pipeline)"
    else:
        hint = ("is the host right and reachable? e.g. "
                "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`")
    detail = f" ({status} {reason})" if status else f" ({reason})"
    msg = f"KFP at {host}{detail}: {hint}"
    if body:
        msg += f"\nserver said: {str(body)[:500]}"
    return msg


def _call(host: str, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except KfpCliError:
        raise
    except ValueError as e:  # kfp's own argument checks ("Multiple pipelines with the name ...")
        raise KfpCliError(f"KFP at {host}: {e}") from None
    except Exception as e:
        raise KfpCliError(_explain(e, host)) from None


def _find_pipeline_id(client, host: str, name: str, namespace: str | None) -> str | None:
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    resp = _call(host, client.list_pipelines, filter=flt, namespace=namespace, page_size=2)
    found = list(resp.pipelines or [])
    if len(found) > 1:
        raise KfpCliError(f"KFP at {host}: {len(found)} pipelines are named {name!r}; pass --pipeline-id")
    return found[0].pipeline_id if found else None


def _latest_version_id(client, host: str, pipeline_id: str) -> str:
    resp = _call(host, client.list_pipeline_versions, pipeline_id=pipeline_id,
                 sort_by="created_at desc", page_size=1)
    versions = list(resp.pipeline_versions or [])
    if not versions:
        raise KfpCliError(f"KFP at {host}: pipeline {pipeline_id} has no versions; upload one first")
    return versions[0].pipeline_version_id


def upload(host: str, package_path: str, pipeline_name: str, version_name: str | None = None,
           namespace: str | None = None, token: str | None = None, description: str | None = None,
           client=None) -> dict[str, str]:
    """Upload a package: a new pipeline, or a new version if ``pipeline_name`` exists already.

    Returns ``{"pipeline_id", "pipeline_version_id", "version_name"}``.
    """
    client = client or make_client(host, namespace, token)
    pipeline_id = _find_pipeline_id(client, host, pipeline_name, namespace)
    if pipeline_id is None:
        p = _call(host, client.upload_pipeline, pipeline_package_path=package_path,
                  pipeline_name=pipeline_name, description=description, namespace=namespace)
        pipeline_id = p.pipeline_id
        version_id = _latest_version_id(client, host, pipeline_id)
        version_name = pipeline_name
    else:
        version_name = version_name or f"{pipeline_name}-{_dt.datetime.now(_dt.timezone.utc):%Y%m%d-%H%M%S}"
        v = _call(host, client.upload_pipeline_version, pipeline_package_path=package_path,
                  pipeline_version_name=version_name, pipeline_id=pipeline_id, description=description)
        version_id = v.pipeline_version_id
    return {"pipeline_id": pipeline_id, "pipeline_version_id": version_id, "version_name": version_name}


def _target(client, host, pipeline_id, version_id, package_path) -> dict[str, Any]:
    if package_path and (pipeline_id or version_id):
        raise KfpCliError("give either a package or --pipeline-id/--version-id, not both")
    if package_path:
        return {"pipeline_package_path": package_path}
    if not pipeline_id:
        raise KfpCliError("nothing to run: give a package or --pipeline-id (see `upload`)")
    return {"pipeline_id": pipeline_id, "version_id": version_id or _latest_version_id(client, host, pipeline_id)}


def create_run(host: str, experiment: str, run_name: str, params: dict[str, Any] | None = None,
               pipeline_id: str | None = None, version_id: str | None = None,
               package_path: str | None = None, namespace: str | None = None, token: str | None = None,
               service_account: str | None = None, enable_caching: bool | None = None,
               client=None) -> str:
    """Start one run of a package or of an uploaded pipeline (its latest version by default).

    The experiment is created when missing. Returns the run id.
    """
    client = client or make_client(host, namespace, token)
    target = _target(client, host, pipeline_id, version_id, package_path)
    exp = _call(host, client.create_experiment, experiment, namespace=namespace)
    run = _call(host, client.run_pipeline, experiment_id=exp.experiment_id, job_name=run_name,
                params=dict(params or {}), enable_caching=enable_caching,
                service_account=service_account or None, **target)
    return run.run_id


def schedule(host: str, experiment: str, run_name: str, params: dict[str, Any] | None = None,
             cron: str | None = None, interval_seconds: int | None = None, max_concurrency: int = 1,
             pipeline_id: str | None = None, version_id: str | None = None,
             package_path: str | None = None, namespace: str | None = None, token: str | None = None,
             service_account: str | None = None, catchup: bool = False, enable_caching: bool | None = None,
             client=None) -> str:
    """Create a recurring run: on a cron schedule (5 or 6 fields) or every ``interval_seconds``.

    ``catchup=False`` (default) means a paused schedule does not backfill missed runs: a ReST
    run is expensive and each one starts from the current champion anyway.
    Returns the recurring run id.
    """
    if (cron is None) == (interval_seconds is None):
        raise KfpCliError("schedule: give exactly one of --cron or --interval-seconds")
    kfp_cron = to_kfp_cron(cron) if cron is not None else None
    if interval_seconds is not None and interval_seconds < 60:
        raise KfpCliError(f"schedule: --interval-seconds {interval_seconds} is under 60; a ReST run takes far longer")
    if max_concurrency < 1:
        raise KfpCliError("schedule: --max-concurrency must be >= 1 (1 = never overlap runs)")
    client = client or make_client(host, namespace, token)
    target = _target(client, host, pipeline_id, version_id, package_path)
    exp = _call(host, client.create_experiment, experiment, namespace=namespace)
    rr = _call(host, client.create_recurring_run, experiment_id=exp.experiment_id, job_name=run_name,
               cron_expression=kfp_cron, interval_second=interval_seconds, max_concurrency=max_concurrency,
               no_catchup=not catchup, params=dict(params or {}), enable_caching=enable_caching,
               service_account=service_account or None, **target)
    return rr.recurring_run_id


def list_runs(host: str, experiment: str | None = None, namespace: str | None = None,
              token: str | None = None, limit: int = 20, client=None) -> list[dict[str, Any]]:
    """The newest runs (of one experiment, if named) as dicts: run_id, name, state, created_at."""
    client = client or make_client(host, namespace, token)
    kwargs: dict[str, Any] = {"page_size": limit, "sort_by": "created_at desc"}
    if experiment:
        exp = _call(host, client.get_experiment, experiment_name=experiment, namespace=namespace)
        kwargs["experiment_id"] = exp.experiment_id
    else:
        kwargs["namespace"] = namespace
    resp = _call(host, client.list_runs, **kwargs)
    return [{"run_id": r.run_id, "name": r.display_name, "state": str(r.state or ""),
             "created_at": str(r.created_at or ""), "experiment_id": r.experiment_id}
            for r in (resp.runs or [])]


# --------------------------------------------------------------------------- CLI

# Shown under each command's --help; tests/test_docs.py parses every one with the real parser.
# The run parameters are the pipeline's inputs (train, valid, test, initial_policy); G, I and
# every other setting are fixed when the pipeline is compiled (--section.field flags).
EXAMPLES = {
    "upload": """examples:
  python pipeline.py upload --cluster-config cluster.yaml --pipeline-name rest-kubeflow
  python pipeline.py upload --package rest-pipeline.yaml --pipeline-name rest-kubeflow --version-name v2
""",
    "run": """examples:
  python pipeline.py run --cluster-config cluster.yaml --experiment rest --service-account rest-pipeline
  python pipeline.py run --cluster-config cluster.yaml --loop.grow_steps 2 \\
      --param train=s3://rest/data/train.tsv --param valid=s3://rest/data/valid.tsv \\
      --param test=s3://rest/data/test.tsv
  python pipeline.py run --pipeline-id PIPELINE_ID --from-champion rest-de-en
""",
    "schedule": """examples:
  python pipeline.py schedule --cluster-config cluster.yaml --cron "0 3 * * 1" --from-champion rest-de-en \\
      --experiment rest --service-account rest-pipeline --max-concurrency 1
  python pipeline.py schedule --pipeline-id PIPELINE_ID --interval-seconds 86400 --from-champion rest-de-en
""",
    "runs": """examples:
  python pipeline.py runs
  python pipeline.py runs --experiment rest --limit 5
""",
    "doctor": """examples:
  python pipeline.py doctor --namespace kubeflow-user-example-com
  python pipeline.py doctor --secret rest-s3-credentials --service rest-minio --service rest-mlflow
""",
}

def register_commands(subparsers) -> dict[str, argparse.ArgumentParser]:
    """Add upload, run, schedule, runs and doctor to ``pipeline.py``'s subparsers.

    Returns the new parsers by name, so ``pipeline.py`` can add its run-config flags
    (``--section.field``) to the ones that compile (PACKAGE_COMMANDS). Those already get
    ``--config`` (run config YAML) and ``--cluster-config`` (rest_kfp.cluster.ClusterConfig YAML)
    for the ``compile_pipeline`` callable to read from ``args``.
    """
    parsers: dict[str, argparse.ArgumentParser] = {}

    def compile_args(p):
        g = p.add_argument_group("compile")
        g.add_argument("--config", default=None, help="Run config YAML (sections as in `python -m rest config`).")
        g.add_argument("--cluster-config", default=None, metavar="YAML",
                       help="Cluster settings (rest_kfp/cluster.py ClusterConfig; see manifests/cluster-config.example.yaml).")
    def common(p):
        g = p.add_argument_group("cluster")
        g.add_argument("--host", default=None, help="KFP API URL, e.g. http://localhost:8080 (env KFP_HOST).")
        g.add_argument("--namespace", default=None,
                       help="Kubeflow profile namespace (env KFP_NAMESPACE); empty for single-user KFP.")
        g.add_argument("--token", default=None,
                       help="Bearer token for the KFP API (env KFP_TOKEN). Never printed.")

    def package(p):
        g = p.add_argument_group("pipeline")
        g.add_argument("--package", default=None, metavar="YAML",
                       help="Use this compiled package instead of compiling the current code.")
        g.add_argument("--pipeline-id", default=None, help="Run an uploaded pipeline instead of a package.")
        g.add_argument("--version-id", default=None, help="Version of --pipeline-id (default: its newest).")

    def run_args(p):
        p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (created if missing).")
        p.add_argument("--run-name", default=None, help="Display name (default: rest-<UTC time>).")
        p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="Pipeline parameter; VALUE is read as JSON when it parses (numbers, true), else text. Repeatable.")
        p.add_argument("--params-file", default=None, metavar="YAML",
                       help="Pipeline parameters from a YAML/JSON mapping (--param wins).")
        p.add_argument("--from-champion", default=None, metavar="MODEL_NAME",
                       help=f"Start from the MLflow champion: sets {CHAMPION_PARAM}=models:/MODEL_NAME@champion.")
        p.add_argument("--service-account", default=None,
                       help="Kubernetes ServiceAccount of the run's pods (manifests/ create rest-pipeline).")
        p.add_argument("--caching", choices=("on", "off"), default=None,
                       help="Override every task's compiled caching setting for this run.")

    raw = argparse.RawDescriptionHelpFormatter
    p = parsers["upload"] = subparsers.add_parser(
        "upload", help="Compile and upload the pipeline (new pipeline or new version).",
        epilog=EXAMPLES["upload"], formatter_class=raw)
    common(p)
    compile_args(p)
    p.add_argument("--package", default=None, metavar="YAML", help="Upload this package instead of compiling.")
    p.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME, help="Pipeline name in KFP.")
    p.add_argument("--version-name", default=None, help="Version name (default: <name>-<UTC time>).")
    p.add_argument("--description", default=None, help="Description shown in the KFP UI.")

    p = parsers["run"] = subparsers.add_parser("run", help="Compile and start one run on the cluster.",
                                                 epilog=EXAMPLES["run"], formatter_class=raw)
    common(p)
    compile_args(p)
    package(p)
    run_args(p)

    p = parsers["schedule"] = subparsers.add_parser("schedule", help="Create a recurring run (cron or interval).",
                                                 epilog=EXAMPLES["schedule"], formatter_class=raw)
    common(p)
    compile_args(p)
    package(p)
    run_args(p)
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", default=None,
                      help="5-field cron ('0 3 * * 1' = Mondays 03:00) or KFP's 6 fields, seconds first.")
    when.add_argument("--interval-seconds", type=int, default=None, help="Run every N seconds (>= 60).")
    p.add_argument("--max-concurrency", type=int, default=1, help="Runs of this schedule at once (default 1).")
    p.add_argument("--catchup", action="store_true", help="Backfill runs missed while paused (default: no).")

    p = parsers["runs"] = subparsers.add_parser("runs", help="List recent runs.",
                                                 epilog=EXAMPLES["runs"], formatter_class=raw)
    common(p)
    p.add_argument("--experiment", default=None, help="Only runs of this experiment.")
    p.add_argument("--limit", type=int, default=20, help="How many (newest first).")

    p = parsers["doctor"] = subparsers.add_parser("doctor", help="Check the namespace, Secrets, Services (and KFP) a run needs.",
                                                 epilog=EXAMPLES["doctor"], formatter_class=raw)
    common(p)
    p.add_argument("--secret", action="append", default=None, dest="secrets", metavar="NAME",
                   help=f"Secret that must exist (repeatable; default: {', '.join(DEFAULT_SECRETS)}).")
    p.add_argument("--service", action="append", default=None, dest="services", metavar="NAME",
                   help=f"Service that must exist (repeatable; default: {', '.join(DEFAULT_SERVICES)}).")
    p.add_argument("--kube-context", default=None, help="kubeconfig context (default: current).")
    return parsers


def parse_params(pairs: list[str], params_file: str | None = None, from_champion: str | None = None) -> dict[str, Any]:
    """Run parameters from a file, ``NAME=VALUE`` pairs and ``--from-champion``."""
    params: dict[str, Any] = {}
    if params_file:
        try:
            with open(params_file, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise KfpCliError(f"--params-file {params_file}: {e}") from None
        if not isinstance(loaded, dict):
            raise KfpCliError(f"--params-file {params_file}: must hold a mapping name: value")
        params.update(loaded)
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise KfpCliError(f"--param {pair!r}: write NAME=VALUE, e.g. --param train=s3://rest/data/train.tsv")
        try:
            params[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[name.strip()] = value
    if from_champion:
        if not re.match(r"^[A-Za-z0-9][\w.\-]*$", from_champion):
            raise KfpCliError(f"--from-champion {from_champion!r}: give a registered model name, e.g. rest-de-en")
        uri = f"models:/{from_champion}@champion"
        if params.get(CHAMPION_PARAM, uri) != uri:
            raise KfpCliError(f"--from-champion conflicts with {CHAMPION_PARAM}={params[CHAMPION_PARAM]!r}; give one")
        params[CHAMPION_PARAM] = uri
    return params


def pipeline_parameters(package_path: str) -> set[str]:
    """The run parameters (root inputs) of a compiled pipeline package."""
    try:
        with open(package_path, encoding="utf-8") as f:
            spec = next(yaml.safe_load_all(f))
    except (OSError, yaml.YAMLError, StopIteration) as e:
        raise KfpCliError(f"--package {package_path}: cannot read the pipeline spec ({e})") from None
    return set(((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {})


def check_params(params: dict[str, Any], known: set[str]) -> None:
    """Refuse a run parameter the pipeline does not have: KFP would ignore or reject it only later."""
    unknown = sorted(set(params) - known)
    if unknown:
        raise KfpCliError(
            f"--param {', '.join(unknown)}: not a parameter of this pipeline (it has: {', '.join(sorted(known))}). "
            "Settings such as G are fixed when the pipeline is compiled: give them as flags, "
            "e.g. --loop.grow_steps 2, or in --config")


def _env(value, name):
    return value if value else (os.environ.get(name) or None)


def dispatch(args: argparse.Namespace, compile_pipeline: Callable[[str], None]) -> int:
    """Run the cluster subcommand in ``args``; returns the exit code (errors go to stderr)."""
    host = _env(args.host, "KFP_HOST")
    namespace = _env(args.namespace, "KFP_NAMESPACE")
    token = _env(args.token, "KFP_TOKEN")
    try:
        if args.command == "doctor":
            return _doctor(args, host, namespace, token)
        if args.command == "runs":
            rows = list_runs(host, experiment=args.experiment, namespace=namespace, token=token, limit=args.limit)
            for r in rows:
                print(f"{r['run_id']}  {r['state'] or '-':<10}  {r['created_at'] or '-':<25}  {r['name']}")
            if not rows:
                print("no runs")
            return 0
        with tempfile.TemporaryDirectory(prefix="rest-kfp-") as tmp:
            package_path = args.package
            if package_path is None and not getattr(args, "pipeline_id", None):
                package_path = os.path.join(tmp, "rest-pipeline.yaml")
                compile_pipeline(package_path)
                print(f"compiled {package_path}")
            if args.command == "upload":
                out = upload(host, package_path, args.pipeline_name, args.version_name, namespace, token,
                             description=args.description)
                print(f"uploaded pipeline {out['pipeline_id']} version {out['pipeline_version_id']} ({out['version_name']})")
                return 0
            params = parse_params(args.param, args.params_file, args.from_champion)
            if package_path and not args.pipeline_id:
                check_params(params, pipeline_parameters(package_path))
            run_name = args.run_name or f"rest-{_dt.datetime.now(_dt.timezone.utc):%Y%m%d-%H%M%S}"
            caching = None if args.caching is None else args.caching == "on"
            common = dict(params=params, pipeline_id=args.pipeline_id, version_id=args.version_id,
                          package_path=package_path if not args.pipeline_id else None, namespace=namespace,
                          token=token, service_account=args.service_account, enable_caching=caching)
            if args.command == "run":
                run_id = create_run(host, args.experiment, run_name, **common)
                print(f"started run {run_id} ({run_name}) in experiment {args.experiment}")
                return 0
            if args.command == "schedule":
                rr = schedule(host, args.experiment, run_name, cron=args.cron, interval_seconds=args.interval_seconds,
                              max_concurrency=args.max_concurrency, catchup=args.catchup, **common)
                when = f"cron '{to_kfp_cron(args.cron)}'" if args.cron else f"every {args.interval_seconds} s"
                print(f"created recurring run {rr} ({run_name}), {when}")
                return 0
        raise KfpCliError(f"unknown command {args.command!r}")
    except KfpCliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _doctor(args, host, namespace, token) -> int:
    from rest_kfp import doctor as doc

    ns = namespace or "kubeflow"
    checks = []
    try:
        api_client = doc.kube_api_client(context=args.kube_context)
    except Exception as e:  # no kubeconfig: say so, still check KFP
        checks.append(doc.Check("kubeconfig", False, f"cannot load a kubeconfig ({type(e).__name__}: {e}); "
                                "set KUBECONFIG or run `kubectl config use-context ...`"))
        api_client = None
    if api_client is not None:
        checks += doc.doctor(ns, list(args.secrets or DEFAULT_SECRETS), list(args.services or DEFAULT_SERVICES),
                             api_client=api_client)
    if host:
        try:
            make_client(host, namespace, token).get_kfp_healthz(sleep_duration=1)
            checks.append(doc.Check("kfp", True, f"KFP API at {host} answers"))
        except Exception as e:
            checks.append(doc.Check("kfp", False, _explain(e, host) if not isinstance(e, KfpCliError) else str(e)))
    else:
        checks.append(doc.Check("kfp", True, "skipped: no --host/KFP_HOST given"))
    for c in checks:
        print(c.line())
    return 0 if all(c.ok for c in checks) else 1
