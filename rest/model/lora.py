"""LoRA fine-tuning (peft): train low-rank adapters, merge them before anything else sees the policy.

With ``finetune.lora_r > 0`` an Improve step (and the control) wraps the loaded policy with
adapters on its linear layers, trains only those, then folds them into the weights
(``merge_and_unload``): the saved policy is a plain model of the same architecture, so
sampling (CTranslate2 included), evaluation and the registry need nothing new. The lineage
(``rest_policy.json``) records that LoRA was used, with its settings.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def settings(cfg) -> dict | None:
    """The LoRA settings of a finetune config (None: full fine-tuning)."""
    if not cfg.lora_r:
        return None
    modules = cfg.lora_target_modules.strip()
    return {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "target_modules": modules if modules == "all-linear" else [m.strip() for m in modules.split(",")
                                                                         if m.strip()]}


def wrap(model, lora: dict):
    """``model`` with fresh LoRA adapters (B = 0: the wrapped model computes what it computed);
    only the adapters are trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    from rest.model.causal import ATTRIBUTE, is_causal

    task = TaskType.CAUSAL_LM if is_causal(model) else TaskType.SEQ_2_SEQ_LM
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=lora["target_modules"], task_type=task)
    prompt = getattr(model, ATTRIBUTE, None)
    wrapped = get_peft_model(model, config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info("lora: r=%d alpha=%d on %s: %d of %d parameters trainable (%.2f%%)", lora["r"], lora["alpha"],
             lora["target_modules"], trainable, total, 100.0 * trainable / max(1, total))
    if prompt is not None:
        object.__setattr__(wrapped, ATTRIBUTE, prompt)
    return wrapped


def merge(model):
    """The plain model with the adapters folded into its weights (what is saved and sampled)."""
    from rest.model.causal import ATTRIBUTE

    prompt = getattr(model, ATTRIBUTE, None)
    merged = model.merge_and_unload()
    if prompt is not None:
        object.__setattr__(merged, ATTRIBUTE, prompt)
    return merged


def is_wrapped(model) -> bool:
    return hasattr(model, "peft_config")
