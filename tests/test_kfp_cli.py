"""rest_kfp.kfp_cli and rest_kfp.doctor against loopback stand-ins of the KFP and Kubernetes APIs."""
# No `from __future__ import annotations`: kfp reads component annotations as real types.
import argparse

import pytest
from kfp import compiler, dsl

from rest_kfp import kfp_cli
from rest_kfp.doctor import doctor
from rest_kfp.kfp_cli import KfpCliError, to_kfp_cron
from tests.k8s_standin import K8sStandin, namespace, secret, service
from tests.kfp_standin import API, KfpStandin

TOKEN = "tok-SENSITIVE-0xdeadbeef"


@dsl.component(base_image="python:3.11-slim")
def _echo(initial_policy: str) -> str:
    return initial_policy


@dsl.pipeline(name="rest-probe")
def _probe(train: str = "", initial_policy: str = "", seed: int = 1):
    _echo(initial_policy=initial_policy)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "probe.yaml"
    compiler.Compiler().compile(_probe, str(path))
    return str(path)


@pytest.fixture
def kfp_server(monkeypatch, tmp_path):
    import kfp.client.client as kc

    # kfp.Client reads ~/.config/kfp/context.json; keep the user's file out of the test.
    monkeypatch.setattr(kc.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))
    for var in ("KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with KfpStandin() as s:
        yield s


def _cli(argv, compile_calls=None, package_path=None):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = kfp_cli.register_commands(sub)
    assert set(parsers) == set(kfp_cli.CLUSTER_COMMANDS)
    args = parser.parse_args(argv)

    def compile_pipeline(path):
        if compile_calls is not None:
            compile_calls.append(path)
        with open(package_path) as src, open(path, "w") as dst:
            dst.write(src.read())

    return kfp_cli.dispatch(args, compile_pipeline)


# --------------------------------------------------------------------------- cron

@pytest.mark.parametrize("given, sent", [
    ("0 3 * * 1", "0 0 3 * * 1"),
    ("*/15  2-4 * * MON-FRI", "0 */15 2-4 * * MON-FRI"),
    ("30 0 3 * * *", "30 0 3 * * *"),
    ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),
    ("@daily", "@daily"),
    ("@every 6h", "@every 6h"),
])
def test_cron_to_kfp_six_fields(given, sent):
    assert to_kfp_cron(given) == sent


@pytest.mark.parametrize("bad, needle", [
    ("0 3 * *", "has 4 fields"),
    ("0 0 0 3 * * * *", "has 8 fields"),
    ("0 25 * * *", "hour value 25"),
    ("61 * * * *", "minute value 61"),
    ("0 3 * * x", "day-of-week"),
    ("@sometimes", "unknown descriptor"),
    ("", "empty"),
])
def test_cron_errors_are_clear(bad, needle):
    with pytest.raises(KfpCliError, match=needle):
        to_kfp_cron(bad)


# --------------------------------------------------------------------------- API calls

def test_upload_new_then_new_version(kfp_server, package):
    first = kfp_cli.upload(kfp_server.url, package, "rest-kubeflow", namespace="team-a")
    (up,) = kfp_server.find("POST", f"{API}/pipelines/upload")
    assert up["query"]["name"] == ["rest-kubeflow"] and up["query"]["namespace"] == ["team-a"]
    assert up["body"]["uploadfile"]["filename"].endswith(".yaml")
    assert "rest-probe" in up["body"]["uploadfile"]["content"]
    assert first["pipeline_id"] == "pipeline-1" and first["pipeline_version_id"].startswith("version-")

    second = kfp_cli.upload(kfp_server.url, package, "rest-kubeflow", version_name="v2")
    (upv,) = kfp_server.find("POST", f"{API}/pipelines/upload_version")
    assert upv["query"]["pipelineid"] == [first["pipeline_id"]] and upv["query"]["name"] == ["v2"]
    assert second["pipeline_id"] == first["pipeline_id"]
    assert second["pipeline_version_id"] != first["pipeline_version_id"]
    # The lookup by name filtered on display_name.
    lookups = kfp_server.find("GET", f"{API}/pipelines")
    assert lookups and "rest-kubeflow" in lookups[-1]["query"]["filter"][0]


def test_run_uploaded_pipeline_uses_newest_version(kfp_server, package):
    up = kfp_cli.upload(kfp_server.url, package, "rest-kubeflow")
    v2 = kfp_cli.upload(kfp_server.url, package, "rest-kubeflow", version_name="v2")
    run_id = kfp_cli.create_run(kfp_server.url, "rest", "r1", {"seed": 2}, pipeline_id=up["pipeline_id"],
                                service_account="rest-pipeline")
    (req,) = kfp_server.find("POST", f"{API}/runs")
    body = req["body"]
    assert body["pipeline_version_reference"] == {"pipeline_id": up["pipeline_id"],
                                                  "pipeline_version_id": v2["pipeline_version_id"]}
    assert body["runtime_config"]["parameters"] == {"seed": 2}
    assert body["display_name"] == "r1" and body["service_account"] == "rest-pipeline"
    # The run goes into the experiment the server created for it (the id comes from the server's reply).
    (exp,) = kfp_server.experiments.values()
    assert exp["display_name"] == "rest" and exp["experiment_id"].startswith("experiment-")
    assert body["experiment_id"] == exp["experiment_id"]
    assert "pipeline_spec" not in body
    assert run_id == "run-" + run_id.split("-")[1]


def test_cli_run_compiles_first_and_sends_spec(kfp_server, package, capsys):
    calls = []
    rc = _cli(["run", "--host", kfp_server.url, "--token", TOKEN, "--experiment", "nightly", "--cluster-config", "c.yaml",
               "--run-name", "r2", "--param", "seed=2", "--param", "train=s3://rest/data/train.tsv", "--caching", "off"],
              calls, package)
    assert rc == 0 and len(calls) == 1
    (exp,) = kfp_server.find("POST", f"{API}/experiments")
    assert exp["body"]["display_name"] == "nightly"
    (req,) = kfp_server.find("POST", f"{API}/runs")
    body = req["body"]
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "rest-probe"
    assert body["runtime_config"]["parameters"] == {"seed": 2, "train": "s3://rest/data/train.tsv"}
    tasks = body["pipeline_spec"]["root"]["dag"]["tasks"]
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    # The token is sent as a bearer header, and never shown.
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers.get("authorization") == f"Bearer {TOKEN}"
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert "started run run-" in out.out


def test_cli_schedule_from_champion(kfp_server, package, capsys, monkeypatch):
    monkeypatch.setenv("KFP_HOST", kfp_server.url)
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    rc = _cli(["schedule", "--cron", "0 3 * * 1", "--from-champion", "rest-de-en", "--max-concurrency", "1",
               "--run-name", "weekly", "--param", "seed=1"], [], package)
    assert rc == 0
    (req,) = kfp_server.find("POST", f"{API}/recurringruns")
    body = req["body"]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert body["runtime_config"]["parameters"] == {"seed": 1, "initial_policy": "models:/rest-de-en@champion"}
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True and body["mode"] == "ENABLE" and body["display_name"] == "weekly"
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "rest-probe"
    out = capsys.readouterr()
    assert "0 0 3 * * 1" in out.out and TOKEN not in out.out + out.err


def test_cli_refuses_a_parameter_the_pipeline_does_not_have(kfp_server, package, capsys):
    # G is fixed when compiling: --param grow_steps=2 must not start a run that silently ignores it.
    rc = _cli(["run", "--host", kfp_server.url, "--param", "grow_steps=2"], [], package)
    assert rc == 2
    err = capsys.readouterr().err
    assert "grow_steps" in err and "--loop.grow_steps" in err and "initial_policy, seed, train" in err
    assert not kfp_server.find("POST", f"{API}/runs")


def test_schedule_interval_with_uploaded_version(kfp_server, package):
    up = kfp_cli.upload(kfp_server.url, package, "rest-kubeflow")
    kfp_cli.schedule(kfp_server.url, "rest", "hourly", {}, interval_seconds=3600, max_concurrency=2,
                     pipeline_id=up["pipeline_id"], version_id=up["pipeline_version_id"])
    body = kfp_server.find("POST", f"{API}/recurringruns")[0]["body"]
    assert body["trigger"]["periodic_schedule"]["interval_second"] == "3600" or \
        int(body["trigger"]["periodic_schedule"]["interval_second"]) == 3600
    assert int(body["max_concurrency"]) == 2
    assert body["pipeline_version_reference"]["pipeline_version_id"] == up["pipeline_version_id"]


def test_schedule_argument_errors(kfp_server, package):
    with pytest.raises(KfpCliError, match="exactly one"):
        kfp_cli.schedule(kfp_server.url, "rest", "x", {}, package_path=package)
    with pytest.raises(KfpCliError, match="has 3 fields"):
        kfp_cli.schedule(kfp_server.url, "rest", "x", {}, cron="0 3 *", package_path=package)
    with pytest.raises(KfpCliError, match="max-concurrency"):
        kfp_cli.schedule(kfp_server.url, "rest", "x", {}, cron="@daily", max_concurrency=0, package_path=package)
    assert not kfp_server.find("POST", f"{API}/recurringruns")


def test_from_champion_conflict_and_bad_param():
    with pytest.raises(KfpCliError, match="conflicts"):
        kfp_cli.parse_params(["initial_policy=/tmp/x"], None, "rest-de-en")
    with pytest.raises(KfpCliError, match="NAME=VALUE"):
        kfp_cli.parse_params(["oops"])


def test_runs_lists_newest(kfp_server, package, capsys):
    kfp_cli.create_run(kfp_server.url, "rest", "a", {}, package_path=package)
    kfp_cli.create_run(kfp_server.url, "rest", "b", {}, package_path=package)
    rows = kfp_cli.list_runs(kfp_server.url, experiment="rest")
    assert [r["name"] for r in rows] == ["b", "a"]
    (lst,) = kfp_server.find("GET", f"{API}/runs")
    assert lst["query"]["experiment_id"] == [rows[0]["experiment_id"]]
    assert _cli(["runs", "--host", kfp_server.url], [], package) == 0
    assert "  a" in capsys.readouterr().out


def test_no_host_and_unreachable_host_errors(monkeypatch, capsys, package):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert _cli(["runs"], [], package) == 2
    assert "KFP_HOST" in capsys.readouterr().err
    # A port nothing listens on (bound then closed): a clear error, no token in it.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert _cli(["runs", "--host", f"http://127.0.0.1:{port}", "--token", TOKEN], [], package) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "port-forward" in err and TOKEN not in err


# --------------------------------------------------------------------------- doctor

def _cluster(ns="team-a"):
    base = f"/api/v1/namespaces/{ns}"
    return {
        base: namespace(ns),
        f"{base}/secrets/rest-s3-credentials": secret(ns, "rest-s3-credentials",
                                                      {"access-key": "dmFsdWUx", "secret-key": "dmFsdWUy"}),
        f"{base}/services/rest-minio": service(ns, "rest-minio", 9000),
    }


def test_doctor_reports_present_and_missing():
    with K8sStandin(_cluster()) as k8s:
        checks = doctor("team-a", ["rest-s3-credentials", "rest-mlflow-auth"], ["rest-minio", "rest-mlflow"],
                        api_client=k8s.api_client())
    by = {c.name: c for c in checks}
    assert by["namespace/team-a"].ok
    assert by["secret/rest-s3-credentials"].ok and "access-key" in by["secret/rest-s3-credentials"].message
    assert "dmFsdWUx" not in " ".join(c.message for c in checks)  # never the values
    assert not by["secret/rest-mlflow-auth"].ok
    assert "kubectl apply -k manifests/overlays/dev" in by["secret/rest-mlflow-auth"].message
    assert by["service/rest-minio"].ok and "9000" in by["service/rest-minio"].message
    assert not by["service/rest-mlflow"].ok and "manifests/overlays/dev" in by["service/rest-mlflow"].message


def test_doctor_missing_namespace_stops_early():
    with K8sStandin({}) as k8s:
        checks = doctor("nowhere", ["s"], ["svc"], api_client=k8s.api_client())
        assert k8s.requests == [("GET", "/api/v1/namespaces/nowhere")]
    assert len(checks) == 1 and not checks[0].ok and "kubectl create namespace nowhere" in checks[0].message


def test_doctor_cli(kfp_server, monkeypatch, capsys, package):
    from rest_kfp import doctor as doc

    with K8sStandin(_cluster()) as k8s:
        monkeypatch.setattr(doc, "kube_api_client", lambda context=None: k8s.api_client())
        rc = _cli(["doctor", "--namespace", "team-a", "--host", kfp_server.url, "--service", "rest-minio"],
                  [], package)
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "[ok] kfp" in out and "[ok] secret/rest-s3-credentials" in out
        rc = _cli(["doctor", "--namespace", "team-a"], [], package)  # rest-mlflow missing by default
        out = capsys.readouterr().out
        assert rc == 1 and "[FAIL] service/rest-mlflow" in out
