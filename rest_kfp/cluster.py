"""Cluster-side settings of the compiled pipeline: image, resources, scheduling, secrets, caching.

The ReST config (``rest.config``) says *what* a run computes; this module says *where and how*
its pods run on Kubernetes. It is kept apart so the same run config compiles for a laptop
(``kfp.local``) and for any cluster, and so nothing secret ever enters a config file: the
cluster config names Kubernetes Secrets and the keys inside them, and the compiled pipeline
only holds those references (``secretKeyRef``); the values stay in the cluster.

``ClusterConfig`` follows ``rest.config``: a help text per field, ``__post_init__`` errors that
name the field and the fix, YAML loading that rejects unknown keys.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from rest.config import STEP_CONFIGS, ConfigError
from rest_kfp.steps import STEP_TABLE

# The component image. Read from the environment only here, at compile time, so a CI job can
# compile against the image it has just pushed without touching code or config files.
IMAGE_ENV = "REST_IMAGE"
DEFAULT_IMAGE = "ghcr.io/rest-kubeflow/rest:0.1.0"

# The label that NetworkPolicies in manifests/ select on: only pods carrying it may reach
# MinIO and the MLflow server. Keep in sync with manifests/base/networkpolicies.yaml.
PIPELINE_POD_LABEL = ("rest-kubeflow/pipeline-pod", "true")

# Environment variable names the core library's storage/tracking code reads in a pod.
ENV_S3_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_S3_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_S3_ENDPOINT = "REST_S3_ENDPOINT"
ENV_S3_BUCKET = "REST_S3_BUCKET"
ENV_MLFLOW_URI = "MLFLOW_TRACKING_URI"
ENV_MLFLOW_USER = "MLFLOW_TRACKING_USERNAME"
ENV_MLFLOW_PASSWORD = "MLFLOW_TRACKING_PASSWORD"


def component_image() -> str:
    """The image every component runs in: ``$REST_IMAGE`` at compile time, else DEFAULT_IMAGE."""
    return os.environ.get(IMAGE_ENV, "").strip() or DEFAULT_IMAGE


def _help(text: str) -> dict:
    return {"help": text}


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


_CPU_RE = re.compile(r"^([0-9]*\.)?[0-9]+m?$")  # what kfp's set_cpu_* accepts
_MEM_RE = re.compile(r"^([0-9]*\.)?[0-9]+(E|P|T|G|M|K|k|Ei|Pi|Ti|Gi|Mi|Ki)?$")
_MEM_FACTOR = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
               "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def cpu_cores(quantity: str) -> float:
    """``"500m"`` -> 0.5, ``"2"`` -> 2.0."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_bytes(quantity: str) -> float:
    """``"2Gi"`` -> 2147483648.0."""
    m = re.match(r"^([0-9.]+)([A-Za-z]*)$", quantity)
    return float(m.group(1)) * _MEM_FACTOR[m.group(2)]


@dataclass
class StepResources:
    """Requests and limits of one step's pod (Kubernetes quantity strings)."""

    cpu_request: str = field(default="500m", metadata=_help("CPU the scheduler reserves, e.g. 500m or 2."))
    cpu_limit: str = field(default="1", metadata=_help("CPU the container may use at most."))
    memory_request: str = field(default="1Gi", metadata=_help("Memory reserved, e.g. 1Gi."))
    memory_limit: str = field(default="2Gi", metadata=_help("Memory limit; the pod is OOM-killed above it."))
    accelerator_type: str = field(default="", metadata=_help(
        "Accelerator resource name, e.g. nvidia.com/gpu (empty = none). Use the CUDA image with it."))
    accelerator_count: int = field(default=0, metadata=_help("Accelerators per pod (needs accelerator_type)."))

    def validate(self, where: str) -> None:
        for name in ("cpu_request", "cpu_limit"):
            v = getattr(self, name)
            _check(isinstance(v, str) and bool(_CPU_RE.match(v)), f"{where}.{name}",
                   f"{v!r} is not a CPU quantity; write e.g. \"500m\" or \"2\" (quoted in YAML)")
        for name in ("memory_request", "memory_limit"):
            v = getattr(self, name)
            _check(isinstance(v, str) and bool(_MEM_RE.match(v)), f"{where}.{name}",
                   f"{v!r} is not a memory quantity; write e.g. \"512Mi\" or \"4Gi\"")
        _check(cpu_cores(self.cpu_request) <= cpu_cores(self.cpu_limit), f"{where}.cpu_request",
               f"{self.cpu_request} exceeds cpu_limit {self.cpu_limit}; raise the limit or lower the request")
        _check(memory_bytes(self.memory_request) <= memory_bytes(self.memory_limit), f"{where}.memory_request",
               f"{self.memory_request} exceeds memory_limit {self.memory_limit}; raise the limit or lower the request")
        _check(isinstance(self.accelerator_count, int) and self.accelerator_count >= 0,
               f"{where}.accelerator_count", "must be an integer >= 0")
        if self.accelerator_count > 0:
            _check(bool(self.accelerator_type), f"{where}.accelerator_type",
                   f"is empty but accelerator_count is {self.accelerator_count}; name the resource, e.g. nvidia.com/gpu")


# Pod sizes of the step table (rest_kfp.steps): sampling and fine-tuning (and bootstrap,
# control and the reward model, which train too) do the heavy lifting; bookkeeping steps get
# a small pod so a cluster can pack them.
POD_SIZES: dict[str, StepResources] = {
    "light": StepResources(),
    "medium": StepResources(cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="4Gi"),
    "heavy": StepResources(cpu_request="2", cpu_limit="4", memory_request="8Gi", memory_limit="16Gi"),
}
DEFAULT_STEP_RESOURCES: dict[str, StepResources] = {name: POD_SIZES[kind.pod] for name, kind in STEP_TABLE.items()}
# The steps that compute, from the step table: those whose run-config section has a `device`
# setting (the control trains with finetune's section). Their pods compute on the GPUs the
# cluster config gives them (device=auto) and must be given the GPUs their device names.
DEVICE_SECTIONS: dict[str, str] = {
    name: kind.section for name, kind in STEP_TABLE.items()
    if kind.section and "device" in {f.name for f in dataclasses.fields(STEP_CONFIGS[kind.section])}}
# Steps with side effects outside the pipeline (MLflow registry, alias moves, the run's
# lifecycle) must run every time: a cache hit would silently skip them.
# A pod that runs past this is stopped (activeDeadlineSeconds): a hung step fails instead of
# holding its node; BC training from scratch and long Grow steps get the longest.
POD_TIMEOUTS: dict[str, int] = {"light": 1800, "medium": 7200, "heavy": 43200}
UNCACHED_STEPS = tuple(name for name, kind in STEP_TABLE.items() if not kind.cacheable)

_TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}


@dataclass
class ClusterConfig:
    """How the pipeline's pods run on Kubernetes. Secrets are referenced by name, never inlined."""

    image: str = field(default_factory=component_image, metadata=_help(
        f"Component image, pinned by tag or digest. Default: ${IMAGE_ENV} at compile time, else {DEFAULT_IMAGE}."))
    image_pull_policy: str = field(default="IfNotPresent", metadata=_help("Always, IfNotPresent or Never."))
    image_pull_secrets: list[str] = field(default_factory=list, metadata=_help(
        "Names of docker-registry Secrets for a private registry."))
    resources: dict[str, StepResources] = field(default_factory=dict, metadata=_help(
        f"Per step ({', '.join(STEP_TABLE)}): cpu_request, cpu_limit, memory_request, memory_limit, "
        "accelerator_type, accelerator_count. Given keys override that step's defaults. The control has "
        "finetune's entry unless it has its own (it trains the same way). A step given a GPU computes on it "
        "with its config's device=auto (the default)."))
    node_selector: dict[str, str] = field(default_factory=dict, metadata=_help(
        "Node labels every pod must match, e.g. {node-pool: ml}."))
    accelerator_node_selector: dict[str, str] = field(default_factory=dict, metadata=_help(
        "Extra node labels for steps that request an accelerator, e.g. {nvidia.com/gpu.present: 'true'}."))
    tolerations: list[dict] = field(default_factory=list, metadata=_help(
        "Pod tolerations: mappings with key, operator (Equal|Exists), value, effect, toleration_seconds."))
    pod_labels: dict[str, str] = field(default_factory=lambda: dict([PIPELINE_POD_LABEL]), metadata=_help(
        "Labels on every pod; the NetworkPolicies in manifests/ admit pods labelled "
        f"{PIPELINE_POD_LABEL[0]}={PIPELINE_POD_LABEL[1]} to MinIO and MLflow."))
    s3_secret: str = field(default="rest-s3-credentials", metadata=_help(
        f"Secret with the S3 (MinIO) credentials, exposed as {ENV_S3_ACCESS_KEY}/{ENV_S3_SECRET_KEY}."))
    s3_access_key_key: str = field(default="access-key", metadata=_help("Key of the access key in s3_secret."))
    s3_secret_key_key: str = field(default="secret-key", metadata=_help("Key of the secret key in s3_secret."))
    s3_endpoint: str = field(default="http://rest-minio:9000", metadata=_help(
        f"S3 endpoint URL the pods use ({ENV_S3_ENDPOINT}); not a secret."))
    s3_bucket: str = field(default="rest", metadata=_help(f"Bucket for artifacts ({ENV_S3_BUCKET})."))
    mlflow_tracking_uri: str = field(default="http://rest-mlflow:5000", metadata=_help(
        f"MLflow tracking server URL ({ENV_MLFLOW_URI})."))
    mlflow_secret: str = field(default="", metadata=_help(
        f"Optional Secret with MLflow basic-auth credentials ({ENV_MLFLOW_USER}/{ENV_MLFLOW_PASSWORD}); empty = none."))
    mlflow_username_key: str = field(default="username", metadata=_help("Key of the user name in mlflow_secret."))
    mlflow_password_key: str = field(default="password", metadata=_help("Key of the password in mlflow_secret."))
    caching: dict[str, bool] = field(default_factory=dict, metadata=_help(
        f"Per step caching on/off; unset steps use enable_caching, except {', '.join(UNCACHED_STEPS)} (always off unless set here)."))
    enable_caching: bool = field(default=True, metadata=_help("Caching of steps not named in `caching`."))
    run_as_user: int = field(default=1000, metadata=_help(
        "UID every container runs as (the image's `rest` user; manifests/ use the same). Non-root is enforced."))
    run_as_group: int = field(default=1000, metadata=_help("GID every container runs as."))
    tmp_size_limit: str = field(default="20Gi", metadata=_help(
        "Size limit of the emptyDir mounted at /tmp, the only place a step writes besides its outputs "
        "(caches, checkpoints, CTranslate2 conversions). The image's root filesystem is never written."))
    timeouts: dict[str, int] = field(default_factory=dict, metadata=_help(
        "Per step: seconds before Kubernetes stops the pod (activeDeadlineSeconds). Unset steps use their "
        "pod size's default: light 1800, medium 7200, heavy 43200."))
    retries: int = field(default=2, metadata=_help(
        "Retries of a failed or preempted task, with exponential backoff from retry_backoff (0 = none)."))
    retry_backoff: str = field(default="60s", metadata=_help("First retry delay, doubling up to 30m, e.g. 60s."))

    def __post_init__(self):
        w = "cluster"
        _check(isinstance(self.image, str) and bool(self.image.strip()), f"{w}.image",
               f"is empty; give an image such as {DEFAULT_IMAGE} or set ${IMAGE_ENV}")
        _check(_image_is_pinned(self.image), f"{w}.image",
               f"{self.image!r} has no tag or uses 'latest'; pin a version tag or @sha256 digest "
               f"(e.g. {DEFAULT_IMAGE}) so every run and cache hit uses the same code")
        _check(self.image_pull_policy in ("Always", "IfNotPresent", "Never"), f"{w}.image_pull_policy",
               f"is {self.image_pull_policy!r}; use Always, IfNotPresent or Never")
        _check(isinstance(self.resources, dict), f"{w}.resources", "must be a mapping step -> resources")
        merged = {}
        for step, res in self.resources.items():
            _check(step in STEP_TABLE, f"{w}.resources.{step}", f"no such step; steps: {', '.join(STEP_TABLE)}")
            if isinstance(res, dict):
                res = _resources_from_dict(res, step, f"{w}.resources.{step}")
            _check(isinstance(res, StepResources), f"{w}.resources.{step}",
                   "must be a mapping of cpu_request, cpu_limit, memory_request, memory_limit, accelerator_*")
            res.validate(f"{w}.resources.{step}")
            merged[step] = res
        self.resources = merged
        for name in ("node_selector", "accelerator_node_selector", "pod_labels"):
            value = getattr(self, name)
            _check(isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()),
                   f"{w}.{name}", "must map label names to string values (quote 'true' and numbers in YAML)")
        _check(isinstance(self.tolerations, list), f"{w}.tolerations", "must be a list of mappings")
        for i, t in enumerate(self.tolerations):
            where = f"{w}.tolerations[{i}]"
            _check(isinstance(t, dict), where, "must be a mapping with key, operator, value, effect")
            unknown = set(t) - _TOLERATION_KEYS
            _check(not unknown, where, f"unknown field(s) {sorted(unknown)}; known: {sorted(_TOLERATION_KEYS)}")
            op = t.get("operator", "Equal")
            _check(op in ("Equal", "Exists"), where, f"operator {op!r}; use Equal or Exists")
            _check(not (op == "Exists" and t.get("value")), where, "operator Exists takes no value; drop value")
            eff = t.get("effect")
            _check(eff in (None, "NoSchedule", "PreferNoSchedule", "NoExecute"), where,
                   f"effect {eff!r}; use NoSchedule, PreferNoSchedule or NoExecute")
            if t.get("toleration_seconds") is not None:
                _check(eff == "NoExecute", where, "toleration_seconds only applies to effect NoExecute")
        _check(bool(self.s3_secret), f"{w}.s3_secret", "is empty; name the Secret holding the S3 credentials")
        _check(bool(self.s3_access_key_key) and bool(self.s3_secret_key_key), f"{w}.s3_access_key_key",
               "s3_access_key_key and s3_secret_key_key must name keys of s3_secret")
        _check(self.s3_endpoint.startswith(("http://", "https://")), f"{w}.s3_endpoint",
               f"{self.s3_endpoint!r} must be a URL such as http://rest-minio:9000")
        _check(bool(re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", self.s3_bucket)), f"{w}.s3_bucket",
               f"{self.s3_bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)")
        _check(self.mlflow_tracking_uri.startswith(("http://", "https://")), f"{w}.mlflow_tracking_uri",
               f"{self.mlflow_tracking_uri!r} must be a URL such as http://rest-mlflow:5000")
        _check(isinstance(self.caching, dict) and all(isinstance(v, bool) for v in self.caching.values()),
               f"{w}.caching", "must map step names to true/false")
        _check(isinstance(self.run_as_user, int) and self.run_as_user > 0, f"{w}.run_as_user",
               "must be a non-root UID (> 0), e.g. 1000")
        _check(isinstance(self.run_as_group, int) and self.run_as_group > 0, f"{w}.run_as_group", "must be a GID > 0")
        _check(isinstance(self.tmp_size_limit, str) and bool(_MEM_RE.match(self.tmp_size_limit)),
               f"{w}.tmp_size_limit", f"{self.tmp_size_limit!r} is not a quantity; write e.g. \"20Gi\"")
        _check(isinstance(self.timeouts, dict), f"{w}.timeouts", "must map step names to seconds")
        for step, seconds in self.timeouts.items():
            _check(step in STEP_TABLE, f"{w}.timeouts.{step}", f"no such step; steps: {', '.join(STEP_TABLE)}")
            _check(isinstance(seconds, int) and seconds > 0, f"{w}.timeouts.{step}", "must be whole seconds > 0")
        _check(isinstance(self.retries, int) and self.retries >= 0, f"{w}.retries", "must be an integer >= 0")
        _check(bool(re.match(r"^[0-9]+(s|m|h)$", str(self.retry_backoff))), f"{w}.retry_backoff",
               f"{self.retry_backoff!r}: write a duration such as 60s, 5m or 1h")
        for step in self.caching:
            _check(step in STEP_TABLE, f"{w}.caching.{step}", f"no such step; steps: {', '.join(STEP_TABLE)}")
        for k in self.image_pull_secrets:
            _check(isinstance(k, str) and bool(k), f"{w}.image_pull_secrets", "must be a list of Secret names")

    def step_resources(self, step: str) -> StepResources:
        """Resources of ``step``: its configured entry (the control: else finetune's), else its default,
        else the light default."""
        if step == "control" and "control" not in self.resources and "finetune" in self.resources:
            return self.resources["finetune"]
        return self.resources.get(step) or DEFAULT_STEP_RESOURCES.get(step) or StepResources()

    def step_timeout(self, step: str) -> int:
        """Seconds before ``step``'s pod is stopped: its configured entry, else its pod size's default."""
        return self.timeouts.get(step) or POD_TIMEOUTS[STEP_TABLE[step].pod]

    def step_caching(self, step: str) -> bool:
        if step in self.caching:
            return self.caching[step]
        return False if step in UNCACHED_STEPS else self.enable_caching

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def _resources_from_dict(raw: dict, step: str, where: str) -> StepResources:
    """A partial mapping overrides the step's defaults (``{cpu_limit: "8"}`` keeps the rest)."""
    known = {f.name for f in dataclasses.fields(StepResources)}
    unknown = set(raw) - known
    _check(not unknown, where, f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    base = DEFAULT_STEP_RESOURCES.get(step) or StepResources()
    values = {k: (str(v) if k != "accelerator_count" and isinstance(v, (int, float)) and not isinstance(v, bool) else v)
              for k, v in raw.items()}
    return dataclasses.replace(base, **values)


def check_step_devices(run_cfg, cfg: ClusterConfig) -> None:
    """The run config's devices agree with the GPUs the cluster config gives each step (at compile time).

    A step's pod sees the GPUs it requests and no others, so ``device: cuda`` (or ``cuda:N``)
    needs an accelerator request (at least N + 1); ``device: cpu`` with a GPU request leaves the
    GPU idle; an explicit ``finetune.processes`` cannot exceed the step's accelerator count.
    """
    for step, section in DEVICE_SECTIONS.items():
        conf = getattr(run_cfg, section)
        res = cfg.step_resources(step)
        gpus, where, device = res.accelerator_count, f"cluster.resources.{step}", conf.device
        if device == "cpu":
            _check(gpus == 0, f"{section}.device",
                   f"is cpu but {where} requests {gpus} {res.accelerator_type}: the GPU would sit idle; "
                   f"set {section}.device=auto (or drop the accelerator request)")
        elif device.startswith("cuda"):
            index = int(device.split(":")[1]) if ":" in device else 0
            _check(gpus > index, f"{section}.device",
                   f"is {device} but {where} requests {gpus} accelerator(s), so its pod sees no such GPU; "
                   f"give {where} accelerator_type: nvidia.com/gpu and accelerator_count: {index + 1} (or more), "
                   f"or set {section}.device=auto")
        if section == "finetune" and conf.processes != "auto" and gpus and device != "cpu":
            _check(int(conf.processes) <= gpus, "finetune.processes",
                   f"is {conf.processes} but {where} requests {gpus} GPU(s) (one process per GPU); "
                   f"use finetune.processes=auto or raise accelerator_count")


def load_cluster_config(path: str | None) -> ClusterConfig:
    """The cluster config from a YAML file (``None``/empty: defaults). Unknown keys are errors."""
    if not path:
        return ClusterConfig()
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"cluster config {path}: not found; see manifests/cluster-config.example.yaml") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cluster config {path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"cluster config {path}: must hold a mapping of settings")
    known = {f.name for f in dataclasses.fields(ClusterConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"cluster config {path}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    try:
        return ClusterConfig(**raw)
    except ConfigError as e:
        raise ConfigError(f"cluster config {path}: {e}") from None


def apply_cluster_settings(task, step: str, cfg: ClusterConfig):
    """Apply ``cfg`` to one pipeline task of step ``step`` and return the task.

    Sets image, resources, accelerator, caching, plain env vars (endpoints, bucket, MLflow URI),
    Secret references for credentials (``secretKeyRef``: the value never enters the YAML),
    node selector, tolerations, pod labels and pull policy/secrets.
    """
    from kfp import kubernetes

    res = cfg.step_resources(step)
    task.set_container_image(cfg.image)
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    if res.accelerator_count > 0:
        task.set_accelerator_type(res.accelerator_type).set_accelerator_limit(res.accelerator_count)
    task.set_caching_options(cfg.step_caching(step))

    task.set_env_variable(ENV_S3_ENDPOINT, cfg.s3_endpoint)
    task.set_env_variable(ENV_S3_BUCKET, cfg.s3_bucket)
    task.set_env_variable(ENV_MLFLOW_URI, cfg.mlflow_tracking_uri)
    # MLflow's S3 artifact client talks to MinIO through this variable when the server does
    # not proxy artifacts; harmless otherwise.
    task.set_env_variable("MLFLOW_S3_ENDPOINT_URL", cfg.s3_endpoint)
    kubernetes.use_secret_as_env(task, secret_name=cfg.s3_secret, secret_key_to_env={
        cfg.s3_access_key_key: ENV_S3_ACCESS_KEY, cfg.s3_secret_key_key: ENV_S3_SECRET_KEY})
    if cfg.mlflow_secret:
        kubernetes.use_secret_as_env(task, secret_name=cfg.mlflow_secret, secret_key_to_env={
            cfg.mlflow_username_key: ENV_MLFLOW_USER, cfg.mlflow_password_key: ENV_MLFLOW_PASSWORD})

    selector = dict(cfg.node_selector)
    if res.accelerator_count > 0:
        selector.update(cfg.accelerator_node_selector)
    for key, value in selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in cfg.tolerations:
        kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator", "Equal"),
                                  value=t.get("value"), effect=t.get("effect"),
                                  toleration_seconds=t.get("toleration_seconds"))
    for key, value in cfg.pod_labels.items():
        kubernetes.add_pod_label(task, key, value)
    kubernetes.set_image_pull_policy(task, cfg.image_pull_policy)
    # Non-root as the image's user (the compiler adds allowPrivilegeEscalation=false, drop ALL
    # capabilities and seccomp RuntimeDefault). kfp-kubernetes cannot set readOnlyRootFilesystem;
    # nothing here writes outside /tmp, an emptyDir, and the outputs KFP mounts.
    kubernetes.set_security_context(task, run_as_user=cfg.run_as_user, run_as_group=cfg.run_as_group,
                                    run_as_non_root=True)
    kubernetes.empty_dir_mount(task, volume_name="tmp", mount_path="/tmp", size_limit=cfg.tmp_size_limit)
    kubernetes.set_timeout(task, cfg.step_timeout(step))
    if cfg.retries and STEP_TABLE[step].cacheable:
        # A preempted pod is retried; steps with side effects outside the run (register, finish) are not.
        task.set_retry(num_retries=cfg.retries, backoff_duration=cfg.retry_backoff, backoff_factor=2.0,
                       backoff_max_duration="1800s")
    # The run's identity for MLflow grouping and MinIO keys comes from the pod's own label,
    # not from a task input: an input would change every run and defeat KFP's cache.
    kubernetes.use_field_path_as_env(task, "REST_PIPELINE_RUN", "metadata.labels['pipeline/runid']")
    if cfg.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(cfg.image_pull_secrets))
    return task
