from kfp import dsl

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def finish_op(status: dsl.PipelineTaskFinalStatus):
    """Exit task: end the pipeline's MLflow parent run with the pipeline's final state.

    Runs after every other task, whether they succeeded or not (``dsl.ExitHandler``):
    SUCCEEDED ends the parent run FINISHED, FAILED ends it FAILED, CANCELLED ends it KILLED.
    A run handed in as ``MLFLOW_RUN_ID`` is left to whoever created it.
    """
    from rest_kfp.runtime import finish_pipeline

    finish_pipeline(status.state, status.error_message)
