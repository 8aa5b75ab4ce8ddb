"""KFP v2 lightweight components: each a thin wrapper turning artifacts into one core call.

The function bodies run inside the component image (or, with kfp.local, in a local
subprocess) and import the ``rest`` core there; nothing at module level is visible to them.
"""
from .bootstrap import bootstrap_op
from .evaluate import evaluate_op
from .filter import filter_op
from .finetune import control_op, finetune_op
from .finish import finish_op
from .prepare import prepare_op
from .register import register_op
from .reward_model import train_reward_model_op
from .sample import merge_op, sample_op
from .score import score_op
from .summarize import summarize_op
from .validate import validate_op

__all__ = ["prepare_op", "bootstrap_op", "sample_op", "merge_op", "score_op", "filter_op", "finetune_op",
           "control_op", "evaluate_op", "summarize_op", "validate_op", "register_op",
           "train_reward_model_op", "finish_op"]
