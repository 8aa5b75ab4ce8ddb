"""Run the ReST pipeline with every task inside the component image (kfp.local + Docker).

    python containers/run_tiny_pipeline.py --image rest-local/rest:0.1.0 \\
        [--mlflow-image rest-local/mlflow-server:3.17.2-1] [--output-dir runs/container] \\
        [-- RUN-LOCAL FLAGS ...]

The same pipeline as ``python pipeline.py run-local``, but kfp.local's DockerRunner starts
each task as a container of ``--image``, set up as a pod of the compiled pipeline on a
cluster: uid/gid 1000, read-only root filesystem, ``/tmp`` the only writable place (a
tmpfs, as the emptyDir there), all capabilities dropped, no privilege escalation. The host
network is shared, so the S3 server and the MLflow server stay on 127.0.0.1. Only the
pipeline root (read-write: KFP's artifacts) and a copy of the local input files (read-only,
readable by uid 1000 whatever the originals' modes) are mounted.

Servers: with ``REST_S3_ENDPOINT`` (and ``AWS_*`` keys) and ``MLFLOW_TRACKING_URI`` in the
environment, those are used (tests/test_container_run.py does this). Otherwise this script
starts an S3 server (moto, in-process, as the test suite does) and, with ``--mlflow-image``,
the MLflow tracking server as a container of that image (same restrictions, sqlite in its
``/tmp``, artifacts proxied to the S3 server).

Without ``--train``, the tiny settings of the test suite run on the first rows of the bundled
corpus, starting from the shipped policy. Writes into ``--output-dir``: summary.json and
summary.md (as run-local), ``containers.json`` (every task: the image it ran in, exit code,
wall seconds and the container settings, plus a probe of those settings from inside a
container) and ``run.log`` (kfp.local's whole stream). Exit code 0 when every task succeeded.

Why kfp.local's DockerRunner: it runs the very same compiled components (command, args,
executor input) as a cluster would, only the launcher differs. One fix on top: kfp 2.17
starts containers with auto_remove and reports success when a container is already gone
before its exit code is read, so here every container is kept until its exit code is read,
then removed.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import shutil
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(ROOT, "data", "libreoffice-de-en")
SHIPPED_POLICY = os.path.join(ROOT, "models", "bc-libreoffice-de-en")

# Every container (tasks and the MLflow server) runs like a pod with the manifests' and the
# compiled pipeline's security context: non-root, read-only root, an emptyDir-like /tmp.
CONTAINER_SECURITY = dict(
    user="1000:1000",
    read_only=True,
    tmpfs={"/tmp": "rw,exec,nosuid,nodev,mode=1777,size=4g"},
    cap_drop=["ALL"],
    security_opt=["no-new-privileges"],
    network_mode="host",
)
# What the tasks get from this process's environment (run id, S3, MLflow): the variables a
# pod gets from the compiled pipeline and the cluster's Secrets.
FORWARD_PREFIXES = ("REST_", "MLFLOW_", "AWS_")
TINY_FLAGS = ["--data.grow_sources", "12", "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5",
              "--filter.thresholds", "0.05,0.1", "--filter.keep_references", "true", "--finetune.epochs", "1"]
INPUT_FLAGS = ("--train", "--valid", "--test", "--policy", "--sources", "--reward-model")

PROBE = r"""
import json, os, pathlib, sys
out = {"uid": os.getuid(), "gid": os.getgid()}
try:
    open("/opt/rest/.probe", "w")
    out["root_writable"] = True
except OSError as e:
    out["root_writable"] = False
    out["root_error"] = e.strerror
pathlib.Path("/tmp/.probe").write_text("x")
out["tmp_writable"] = True
root = sys.argv[1]
pathlib.Path(root, ".probe").write_text("x")
out["pipeline_root_writable"] = True
os.remove(os.path.join(root, ".probe"))
import torch, kfp, mlflow, rest
out["versions"] = {"python": sys.version.split()[0], "torch": torch.__version__, "kfp": kfp.__version__,
                   "mlflow": mlflow.__version__}
print(json.dumps(out))
"""


def docker_client():
    import docker

    client = docker.from_env()
    client.ping()
    return client


def image_exists(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def run_probe(client, image: str, pipeline_root: str) -> dict:
    """Start one container with the task settings and report what it may do."""
    out = client.containers.run(image, ["python", "-c", PROBE, pipeline_root], remove=True,
                                volumes={pipeline_root: {"bind": pipeline_root, "mode": "rw"}},
                                **CONTAINER_SECURITY)
    return json.loads(out.decode().strip().splitlines()[-1])


# -- the MLflow tracking server as a container ------------------------------------------------


def start_mlflow_container(client, image: str, port: int, s3_env: dict, bucket: str = "mlflow-artifacts"):
    """``mlflow server`` in ``image`` on 127.0.0.1:port; artifacts proxied to s3://bucket."""
    env = {k: v for k, v in s3_env.items() if k.startswith(("AWS_", "MLFLOW_S3"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers needed
    container = client.containers.run(
        image,
        ["mlflow", "server", "--backend-store-uri", "sqlite:////tmp/mlflow.db",
         "--artifacts-destination", f"s3://{bucket}", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        detach=True, environment=env, name=f"rest-mlflow-{port}", **CONTAINER_SECURITY)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        container.reload()
        if container.status == "exited":
            logs = container.logs().decode(errors="replace")[-3000:]
            container.remove(force=True)
            raise RuntimeError(f"the MLflow server container exited:\n{logs}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return container, url
        except OSError:
            pass
        time.sleep(0.5)
    logs = container.logs().decode(errors="replace")[-3000:]
    container.remove(force=True)
    raise RuntimeError(f"the MLflow server container did not answer within 120 s:\n{logs}")


def stop_container(container) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.remove(force=True)


# -- running the tasks ------------------------------------------------------------------------


class TaskRecorder:
    """Replaces kfp.local's container launcher: runs the task, streams its log, records it."""

    def __init__(self, console):
        self.tasks: list[dict] = []
        self.console = console

    @staticmethod
    def task_name(command: list[str]) -> str:
        try:
            executor_input = json.loads(command[command.index("--executor_input") + 1])
            return os.path.basename(os.path.dirname(executor_input["outputs"]["outputFile"]))
        except (ValueError, KeyError, IndexError):
            return "?"

    def __call__(self, client, image, command, volumes, **run_args):
        import docker

        task = self.task_name(command)
        run_args.pop("auto_remove", None)
        if not image_exists(client, image):
            raise RuntimeError(f"image {image} is not on this engine (no registry is used): build it first")
        t0 = time.time()
        print(f"[container] {task}: start in {image}", file=self.console, flush=True)
        container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                          volumes=volumes, **run_args)
        try:
            for chunk in container.logs(stream=True, follow=True):
                print(chunk.decode(errors="replace"), end="")
            code = container.wait()["StatusCode"]
        finally:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
        wall = time.time() - t0
        self.tasks.append({"task": task, "image": image, "exit_code": code, "wall_s": round(wall, 2),
                           "user": run_args.get("user"), "read_only": run_args.get("read_only"),
                           "tmpfs": run_args.get("tmpfs"), "network_mode": run_args.get("network_mode"),
                           "cap_drop": run_args.get("cap_drop"), "security_opt": run_args.get("security_opt"),
                           "mounts": sorted([m["Target"] for m in run_args.get("mounts", [])]
                                            + list(v["bind"] for v in volumes.values()))})
        print(f"[container] {task}: exit {code} in {wall:.1f} s", file=self.console, flush=True)
        return code


LOCAL_INPUT_FLAGS = INPUT_FLAGS + ("--data.train", "--data.valid", "--data.test", "--bootstrap.policy",
                                   "--data.sources", "--score.reward_model_path")


def stage_inputs(argv: list[str], stage_dir: str) -> tuple[list[str], list[str]]:
    """Copy the local input files and directories among run-local flags into ``stage_dir``
    (readable by the tasks' uid 1000, whatever the originals' modes) and point the flags there.

    Returns the new flags and the directories to mount read-only (``stage_dir`` or none), as
    on a cluster the inputs come from the object store, not from the submitter's disk.
    """
    out, staged = list(argv), False
    for k, flag in enumerate(argv[:-1]):
        value = argv[k + 1]
        if flag not in LOCAL_INPUT_FLAGS or not value or "://" in value or value.startswith("models:/"):
            continue
        src = os.path.abspath(value)
        if not os.path.exists(src):
            continue  # validate reports it, as with run-local
        os.makedirs(stage_dir, mode=0o755, exist_ok=True)
        dest = os.path.join(stage_dir, f"{k:02d}-{os.path.basename(src.rstrip(os.sep))}")
        if os.path.isdir(src):
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dest)
        if os.path.isdir(dest):
            for dirpath, _, filenames in os.walk(dest):
                os.chmod(dirpath, 0o755)
                for f in filenames:
                    os.chmod(os.path.join(dirpath, f), 0o644)
        else:
            os.chmod(dest, 0o644)
        out[k + 1] = dest
        staged = True
    if staged:
        os.chmod(stage_dir, 0o755)
    return out, [stage_dir] if staged else []


def tiny_inputs(workdir: str) -> list[str]:
    """The first rows of the bundled corpus and the shipped policy, as run-local flags."""
    os.makedirs(workdir, exist_ok=True)
    flags = []
    for split, n in (("train", 300), ("valid", 16), ("test", 16)):
        dest = os.path.join(workdir, f"{split}.tsv")
        with open(os.path.join(BUNDLED, f"{split}.tsv"), encoding="utf-8") as src, \
                open(dest, "w", encoding="utf-8") as out:
            for k, line in enumerate(src):
                if k > n:
                    break
                out.write(line)
        flags += [f"--{split}", dest]
    return flags + ["--source-column", "de", "--target-column", "en", "--policy", SHIPPED_POLICY]


def _setup(image: str, run_argv: list[str], output_dir: str, console):
    """Config, engine, pipeline root, probe and a DockerRunner with the pod settings."""
    import warnings

    os.environ["REST_IMAGE"] = image  # read when the components are defined (import below)
    sys.path.insert(0, ROOT)
    # As run-local: display names matter on a cluster only; the custom image is the point here.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    import docker
    from kfp import local

    import pipeline

    run_argv, input_mounts = stage_inputs(run_argv, os.path.join(output_dir, "inputs-staged"))
    args = pipeline.build_parser().parse_args(["run-local", "--output-dir", output_dir, *run_argv])
    cfg = pipeline.resolve_config(args)
    if args.no_tracking:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    elif not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SystemExit("run_tiny_pipeline: set MLFLOW_TRACKING_URI (an MLflow server), give --mlflow-image, "
                         "or pass --no-tracking")
    os.environ["REST_PIPELINE_RUN"] = f"container-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    client = docker_client()
    if not image_exists(client, image):
        raise SystemExit(f"run_tiny_pipeline: image {image} not found; build it: bash containers/build.sh --local")
    root = os.path.join(output_dir, "pipeline_root")
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o1777)  # the tasks run as uid 1000 and write their outputs here
    probe = run_probe(client, image, root)
    print(f"[container] probe of the task settings: {json.dumps(probe)}", file=console, flush=True)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIXES) and k != "REST_IMAGE"}
    mounts = [docker.types.Mount(target=d, source=d, type="bind", read_only=True) for d in input_mounts]
    local.init(runner=local.DockerRunner(environment=env, mounts=mounts, **CONTAINER_SECURITY),
               pipeline_root=root, raise_on_error=True)
    return pipeline, cfg, root, probe


@contextlib.contextmanager
def _recording(output_dir: str, console):
    """kfp.local's stream to output_dir/run.log; every container launch through TaskRecorder."""
    from kfp.local import docker_task_handler

    recorder = TaskRecorder(console)
    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = recorder
    log_path = os.path.join(output_dir, "run.log")
    try:
        with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            handler = logging.StreamHandler(log)
            logging.getLogger().addHandler(handler)
            logging.getLogger("kfp").setLevel(logging.INFO)
            try:
                yield recorder, log_path
            finally:
                logging.getLogger().removeHandler(handler)
    finally:
        docker_task_handler.run_docker_container = original


def run_in_containers(image: str, run_argv: list[str], output_dir: str, console=sys.stderr,
                      smoke: bool = False) -> dict:
    """Run the pipeline (``smoke``: only its prepare component) with every task in ``image``.

    Returns and writes to output_dir/containers.json: the probe, every task (image, exit code,
    wall seconds, settings), ``failed`` (None or why) and, for a pipeline, its summary.
    """
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    pipeline, cfg, root, probe = _setup(image, run_argv, output_dir, console)
    before = set(os.listdir(root))
    t0 = time.time()
    failed = None
    outputs = {}
    with _recording(output_dir, console) as (recorder, log_path):
        try:
            if smoke:
                from components import prepare_op

                task = prepare_op(config=cfg.to_dict()["data"], train=cfg.data.train, valid=cfg.data.valid,
                                  test=cfg.data.test)
                outputs = {k: v for k, v in task.outputs["data"].metadata.items() if k.endswith("_rows")}
            else:
                pipeline.build_pipeline(cfg)(train=cfg.data.train, valid=cfg.data.valid, test=cfg.data.test,
                                             initial_policy=cfg.bootstrap.policy)
        except RuntimeError as e:
            failed = str(e)
    result = {"image": image, "pipeline_run": os.environ["REST_PIPELINE_RUN"], "smoke": smoke,
              "wall_s": round(time.time() - t0, 1), "probe": probe, "tasks": recorder.tasks, "failed": failed,
              "log": log_path}
    if smoke:
        result["outputs"] = outputs
    else:
        found = [d for d in glob.glob(os.path.join(root, "*", "summarize-op", "summary"))
                 if d.split(os.sep)[-3] not in before]
        if failed is None and len(found) == 1:
            for name in ("summary.json", "summary.md"):
                shutil.copy(os.path.join(found[0], name), os.path.join(output_dir, name))
            with open(os.path.join(output_dir, "summary.json"), encoding="utf-8") as f:
                result["summary"] = json.load(f)
        elif failed is None:
            result["failed"] = f"expected one summarize output under {root}, found {len(found)}"
    with open(os.path.join(output_dir, "containers.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


# -- the command ------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, help="the component image (containers/build.sh --local)")
    ap.add_argument("--mlflow-image", default="",
                    help="serve tracking from this MLflow server image (unless MLFLOW_TRACKING_URI is set)")
    ap.add_argument("--output-dir", default="runs/container")
    ap.add_argument("--smoke", action="store_true",
                    help="run only the prepare component in the image (with the probe): the CI smoke check")
    ap.add_argument("run_local", nargs=argparse.REMAINDER, help="-- then run-local flags (default: tiny settings)")
    args = ap.parse_args(argv)
    run_argv = [a for a in args.run_local if a != "--"] if args.run_local else []
    output_dir = os.path.abspath(args.output_dir)
    if not any(f in run_argv for f in ("--train", "--data.train")):
        run_argv = tiny_inputs(os.path.join(output_dir, "inputs")) + TINY_FLAGS + run_argv

    with contextlib.ExitStack() as stack:
        client = docker_client()
        if not os.environ.get("REST_S3_ENDPOINT") and not args.smoke:
            sys.path.insert(0, ROOT)
            from tests.servers import S3Server, free_port

            s3 = S3Server(port=free_port())
            s3.start()
            stack.callback(s3.stop)
            s3._create_user()
            os.environ.update(s3.env())
            os.environ.setdefault("REST_S3_BUCKET", "rest-container")
            print(f"[container] S3 server (moto) at {s3.url}", file=sys.stderr)
        if args.smoke:
            run_argv.append("--no-tracking")
        elif not os.environ.get("MLFLOW_TRACKING_URI") and args.mlflow_image and "--no-tracking" not in run_argv:
            import boto3

            from tests.servers import free_port

            s3c = boto3.client("s3", endpoint_url=os.environ["REST_S3_ENDPOINT"], region_name="us-east-1",
                               aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
                               aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"))
            for bucket in ("mlflow-artifacts", os.environ.get("REST_S3_BUCKET", "rest")):
                with contextlib.suppress(s3c.exceptions.BucketAlreadyOwnedByYou):
                    s3c.create_bucket(Bucket=bucket)
            container, url = start_mlflow_container(client, args.mlflow_image, free_port(), dict(os.environ))
            stack.callback(stop_container, container)
            os.environ["MLFLOW_TRACKING_URI"] = url
            os.environ.setdefault("REST_MLFLOW_EXPERIMENT", "rest-container")
            print(f"[container] MLflow server in {args.mlflow_image} at {url}", file=sys.stderr)
        result = run_in_containers(args.image, run_argv, output_dir, smoke=args.smoke)

    tasks = result["tasks"]
    print(f"\n{len(tasks)} tasks ran in {args.image} (uid {result['probe']['uid']}, read-only root: "
          f"{not result['probe']['root_writable']}, /tmp writable: {result['probe']['tmp_writable']}) "
          f"in {result['wall_s']:.0f} s; details: {os.path.join(output_dir, 'containers.json')}")
    for t in tasks:
        print(f"  {t['task']:<28} exit {t['exit_code']}  {t['wall_s']:7.1f} s")
    if result.get("failed") or any(t["exit_code"] != 0 for t in tasks) or not tasks:
        print(f"error: {result.get('failed') or 'a task failed'}; full log: {result['log']}", file=sys.stderr)
        return 1
    if args.smoke:
        print(f"prepare in the image: {json.dumps(result['outputs'])}")
        return 0
    with open(os.path.join(output_dir, "summary.md"), encoding="utf-8") as f:
        print("\n" + f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
