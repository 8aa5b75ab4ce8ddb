from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def register_op(model_name: str, metric: str, policy: Input[Model], data: Input[Dataset], decision: Output[Metrics]):
    """Register the final policy in the MLflow registry and promote it if it beats the champion.

    ``champion`` moves only when the candidate is significantly better on the fixed test
    split (paired bootstrap); otherwise the candidate becomes ``challenger``.
    """
    import json
    import os

    from rest.steps.data import PreparedData
    from rest.steps.data import read_rows
    from rest.model.policy import policy_info
    from rest.services.registry import promote, register_policy
    from rest_kfp.runtime import pipeline_run, step

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    with step("register") as s:
        if not uri:
            s.metric(registered=0)
            return
        info = policy_info(policy.path)
        tags = {"rest.pipeline_run": pipeline_run(), "rest.g": info.get("grow_step"), "rest.i": info.get("improve_step"),
                "rest.threshold": info.get("threshold"), "rest.policy_sha256": policy.metadata.get("sha256", ""),
                **{f"rest.steps.data.{k}": v for k, v in data.metadata.items() if k.endswith("sha256")}}
        version = register_policy(policy.path, model_name, uri, tags=tags)
        result = promote(model_name, version, read_rows(PreparedData.at(data.path).test), uri, metric=metric)
        for k, v in result.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                decision.log_metric(k, v)
        decision.metadata["decision"] = json.dumps(result, default=str)
        s.metric(registered=1, version=int(version))
        s.parent_metrics["promoted"] = float(bool(result.get("promoted")))
