from kfp import dsl

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def validate_op(config: dict, train: str, valid: str, test: str, initial_policy: str, check_devices: bool = True):
    """First task: check the whole config, the inputs and the services before any compute starts.

    ``check_devices``: the steps run on this task's machine (kfp.local), so a step set to cuda
    needs a GPU here. Compiled for a cluster it is off: the compiler checked the devices
    against the cluster config's GPU requests.
    """
    import os

    from rest_kfp.runtime import s3_settings, step
    from rest.steps.validate import validate_run

    with step("validate") as s:
        warnings: list = []  # each also logged: over-long rows to skip, rows over the token limit, overlaps
        validate_run(config, train=train, valid=valid, test=test, initial_policy=initial_policy,
                     s3_settings=s3_settings(), tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
                     warnings=warnings, check_devices=check_devices)
        s.metric(validate_warnings=len(warnings))
        s.run_config = config  # the resolved config, logged once on the pipeline's parent run
