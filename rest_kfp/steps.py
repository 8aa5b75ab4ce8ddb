"""The one step table: every kind of task the pipeline runs, with what each needs.

``pipeline.py`` names its tasks from it, :mod:`rest_kfp.cluster` takes default pod
resources, caching and the valid keys of a cluster config's ``resources``/``caching`` from it,
and :func:`rest_kfp.runtime.step` checks the step names components log under against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepKind:
    """One kind of pipeline task."""

    name: str                 # the cluster config key and the label its log lines and MLflow run carry
    section: str | None       # the run config section its task receives (None: none, or the whole config)
    pod: str                  # default pod size: light | medium | heavy (rest_kfp.cluster.POD_SIZES)
    display: str              # task display name; {g} and {i} are the Grow and Improve indices
    cacheable: bool = True    # False: a cache hit would skip a side effect (registry, run lifecycle, logging)
    # Display names of the same kind of task outside the loop, by role (the BC policy, the control).
    display_outside: dict[str, str] = field(default_factory=dict)


STEP_TABLE: dict[str, StepKind] = {s.name: s for s in (
    StepKind("validate", None, "light", "validate"),
    StepKind("prepare", "data", "light", "prepare"),
    StepKind("bootstrap", "bootstrap", "heavy", "bootstrap"),
    StepKind("sample", "sample", "heavy", "grow-{g}/sample"),
    StepKind("merge", None, "light", "grow-{g}/merge"),
    StepKind("reward_model", "reward_model", "heavy", "reward-model"),
    StepKind("score", "score", "medium", "grow-{g}/score"),
    StepKind("filter", "filter", "light", "grow-{g}/improve-{i}/filter"),
    StepKind("finetune", "finetune", "heavy", "grow-{g}/improve-{i}/finetune"),
    StepKind("evaluate", "evaluate", "medium", "grow-{g}/improve-{i}/evaluate",
             display_outside={"bc": "evaluate-bc", "control": "control/evaluate"}),
    StepKind("control", "finetune", "heavy", "control/finetune"),
    # Logs this run's table to this run's MLflow parent; from cache it would log nothing.
    StepKind("summarize", None, "light", "summarize", cacheable=False),
    # Moves registry aliases: a cache hit would silently skip the promotion.
    StepKind("register", None, "light", "register", cacheable=False),
    # Ends this run's MLflow parent run.
    StepKind("finish", None, "light", "finish", cacheable=False),
)}


def display_name(step: str, g: int = 0, i: int = 0, role: str = "") -> str:
    """The task's display name, e.g. ``grow-1/improve-2/finetune``, ``evaluate-bc``."""
    kind = STEP_TABLE[step]
    if role:
        return kind.display_outside[role]
    return kind.display.format(g=g, i=i)
