"""Pre-flight checks for a cluster run: does the namespace hold what the pipeline's pods need?

A ReST run fails late and expensively when a Secret or Service is missing (the first task
that touches MinIO dies after its image pulled). ``doctor`` asks the Kubernetes API up front
and says, for each missing object, how to create it. It only reads (GET), never writes.
"""
from __future__ import annotations

from dataclasses import dataclass

APPLY_HINT = "kubectl apply -k manifests/overlays/dev"


@dataclass
class Check:
    """One check: what was looked at, whether it passed, and a message (the fix when failed)."""

    name: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.name}: {self.message}"


def kube_api_client(context: str | None = None):
    """An ``ApiClient`` from the in-cluster service account, else the kubeconfig (``context``)."""
    from kubernetes import client, config

    try:
        if context is None:
            config.load_incluster_config()
            return client.ApiClient()
    except config.ConfigException:
        pass
    cfg = client.Configuration()
    config.load_kube_config(context=context, client_configuration=cfg)
    return client.ApiClient(cfg)


def _status(e: Exception) -> int | None:
    return getattr(e, "status", None)


def _problem(e: Exception) -> str:
    status = _status(e)
    if status in (401, 403):
        return (f"not allowed to read it ({status}); your kubeconfig user needs get on "
                "namespaces/secrets/services in this namespace")
    if status:
        return f"API error {status} {getattr(e, 'reason', '')}".strip()
    return f"cannot reach the Kubernetes API ({type(e).__name__}); check KUBECONFIG / kubectl config current-context"


def doctor(namespace: str, secrets: list[str], services: list[str], api_client=None) -> list[Check]:
    """Check that ``namespace`` and the named Secrets and Services in it exist.

    ``api_client``: a ``kubernetes.client.ApiClient`` (default: in-cluster or kubeconfig).
    Secret *values* are never read into the result: only existence and key names are reported.
    """
    from kubernetes import client

    api = client.CoreV1Api(api_client or kube_api_client())
    checks: list[Check] = []
    try:
        api.read_namespace(namespace)
        checks.append(Check(f"namespace/{namespace}", True, "exists"))
    except Exception as e:
        if _status(e) == 404:
            msg = (f"missing; create it (a Kubeflow profile creates its namespace: apply a Profile, "
                   f"or `kubectl create namespace {namespace}`), then `{APPLY_HINT}`")
        else:
            msg = _problem(e)
        # Nothing inside a missing or unreadable namespace can be checked.
        return checks + [Check(f"namespace/{namespace}", False, msg)]

    for name in secrets:
        try:
            secret = api.read_namespaced_secret(name, namespace)
            keys = sorted((secret.data or {}).keys()) + sorted((secret.string_data or {}).keys())
            checks.append(Check(f"secret/{name}", True, f"exists (keys: {', '.join(keys) or 'none'})"))
        except Exception as e:
            if _status(e) == 404:
                msg = (f"missing in {namespace}; `{APPLY_HINT}` creates it with placeholder values "
                       f"(replace them, see the README section Deploy on Kubeflow), or `kubectl create secret generic {name} "
                       f"-n {namespace} --from-literal=access-key=... --from-literal=secret-key=...`")
            else:
                msg = _problem(e)
            checks.append(Check(f"secret/{name}", False, msg))

    for name in services:
        try:
            svc = api.read_namespaced_service(name, namespace)
            ports = ",".join(str(p.port) for p in (svc.spec.ports or [])) if svc.spec else ""
            checks.append(Check(f"service/{name}", True, f"exists (ports: {ports or 'none'})"))
        except Exception as e:
            msg = f"missing in {namespace}; `{APPLY_HINT}` (or overlays/prod) deploys it" if _status(e) == 404 else _problem(e)
            checks.append(Check(f"service/{name}", False, msg))
    return checks
