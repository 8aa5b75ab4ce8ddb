"""KFP cache-key stability: changing only the last threshold invalidates only the last Improve step.

A task's cache key (on a cluster and in kfp.local) is its component (image, command) and its
inputs: constants, and the outputs of upstream tasks. Compile the pipeline twice with
only τ_I changed; a task may re-run only if its own spec changed or an upstream task
re-runs. That set must be exactly the last Improve step's filter/finetune/evaluate and what
depends on it (the control, which needs the last step's optimizer-step count, its
evaluation, and the summary), plus the validate task, which checks the whole config
(cheap; nothing consumes its outputs, later tasks only run after it).
"""
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from rest.config import load_config

AFTER_SUMMARY = {"register", "promote"}


def _spec(tmp_path, name, overrides):
    path = str(tmp_path / f"{name}.yaml")
    pipeline.compile_pipeline(load_config(None, overrides), path)
    with open(path) as f:
        doc = next(yaml.safe_load_all(f))
    return json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())


def _task_keys(spec):
    """display name -> (what decides the task's cache key, upstream display names)."""
    tasks = spec.components["comp-exit-handler-1"].dag.tasks  # the body: all tasks but the exit task
    display = {key: t.task_info.name for key, t in tasks.items()}
    out = {}
    for key, t in tasks.items():
        inputs = json_format.MessageToDict(t.inputs)
        # Upstream task ids are compiler-generated; compare by display name.
        text = yaml.safe_dump(inputs, sort_keys=True)
        for k, name in sorted(display.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(f"producerTask: {k}\n", f"producerTask: <{name}>\n")
        comp = spec.components[t.component_ref.name]
        executor = json_format.MessageToDict(spec.deployment_spec)["executors"][comp.executor_label]
        definition = json_format.MessageToDict(comp)
        definition.pop("executorLabel", None)
        key_parts = (text, yaml.safe_dump(definition, sort_keys=True), yaml.safe_dump(executor, sort_keys=True),
                     json_format.MessageToDict(t.caching_options) if t.HasField("caching_options") else {})
        # Only data flow counts: a task that merely runs .after() another (no output consumed)
        # keeps its key when that task re-runs.
        upstream = {display[a.task_output_artifact.producer_task] for a in t.inputs.artifacts.values()
                     if a.task_output_artifact.producer_task}
        upstream |= {display[p.task_output_parameter.producer_task] for p in t.inputs.parameters.values()
                     if p.task_output_parameter.producer_task}
        out[display[key]] = (repr(key_parts), upstream)
    return out


def _rerun_set(a, b):
    assert set(a) == set(b), "changing a threshold must not change the task set"
    rerun = {name for name in a if a[name][0] != b[name][0]}
    grew = True
    while grew:  # everything downstream of a changed task re-runs too
        new = {name for name, (_, up) in b.items() if up & rerun} - rerun
        rerun |= new
        grew = bool(new)
    return rerun


@pytest.mark.parametrize("G, thresholds, changed", [
    (1, "0.5,0.6,0.7", "0.5,0.6,0.75"),
    (2, "0.5,0.6", "0.5,0.65"),
])
def test_changing_last_threshold_reruns_only_last_improve_step(tmp_path, G, thresholds, changed):
    a = _task_keys(_spec(tmp_path, "a", {"loop.grow_steps": str(G), "filter.thresholds": thresholds}))
    b = _task_keys(_spec(tmp_path, "b", {"loop.grow_steps": str(G), "filter.thresholds": changed}))
    I = len(thresholds.split(","))
    # Every Grow step uses the same schedule, so τ_I is grow-1's last step too; with G > 1
    # everything from there on re-runs (grow-2 samples from grow-1's last policy).
    expected = {"validate", "control/finetune", "control/evaluate", "summarize",
                "grow-1/improve-%d/filter" % I, "grow-1/improve-%d/finetune" % I, "grow-1/improve-%d/evaluate" % I}
    expected |= {name for name in a if any(name.startswith(f"grow-{g}/") for g in range(2, G + 1))}
    rerun = _rerun_set(a, b)
    assert expected <= rerun
    # Tasks after the summary (registering the result) consume the changed result by design.
    assert rerun - expected <= AFTER_SUMMARY, f"unexpected re-runs: {sorted(rerun - expected)}"
    cached = set(a) - rerun
    assert {"prepare", "bootstrap", "evaluate-bc", "grow-1/sample", "grow-1/score"} <= cached
    assert {f"grow-1/improve-{i}/{s}" for i in range(1, I) for s in ("filter", "finetune", "evaluate")} <= cached


def test_changing_first_threshold_reruns_every_improve_step(tmp_path):
    """The check is not vacuous: τ_1 feeds every filter (the guard), so every Improve step re-runs."""
    a = _task_keys(_spec(tmp_path, "a", {"filter.thresholds": "0.5,0.6"}))
    b = _task_keys(_spec(tmp_path, "b", {"filter.thresholds": "0.45,0.6"}))
    rerun = _rerun_set(a, b)
    assert {"grow-1/improve-1/filter", "grow-1/improve-2/filter"} <= rerun
    assert not {"prepare", "bootstrap", "grow-1/sample", "grow-1/score", "evaluate-bc"} & rerun
