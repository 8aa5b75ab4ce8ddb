from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def summarize_op(config: dict, report: Input[Artifact], summary: Output[Artifact], table: Output[Markdown],
                 curves: Output[HTML]):
    """The run's summary.json, its table (shown in the KFP UI) and learning curves, with the verdict."""
    import base64
    import os
    import shutil

    from rest_kfp.runtime import step
    from rest.steps.summary import write_summary
    from rest.services.tracking import curves_plot

    with step("summarize") as s:
        result = write_summary(report.path, summary.path, config, started=s.started)
        shutil.copy(os.path.join(summary.path, "summary.md"), table.path)
        png = curves_plot(result["steps"], os.path.join(summary.path, "curves.png"))
        with open(png, "rb") as f:
            encoded = base64.b64encode(f.read()).decode()
        with open(curves.path, "w", encoding="utf-8") as f:
            f.write(f'<html><body><img src="data:image/png;base64,{encoded}"/></body></html>')
        last = result["steps"][-1] if result["steps"] else {}
        rest_rows = [r for r in result["steps"] if r["g"] > 0 and not r["control"]]
        if rest_rows:
            last = rest_rows[-1]
            s.parent_metrics.update({k: last[k] for k in ("test_bleu", "test_chrf", "test_reward")})
        for k, v in result["verdict"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                s.parent_metrics[k] = v
        # The intervals too, flat (MLflow metrics are scalars): e.g. test_chrf_vs_bc_ci_low.
        for base, sig in result["verdict"].get("significance", {}).items():
            for key, r in sig.items():
                s.parent_metrics.update({f"{key}_vs_{base}_ci_low": r["delta_ci"][0],
                                         f"{key}_vs_{base}_ci_high": r["delta_ci"][1],
                                         f"{key}_vs_{base}_p": r["p_value"]})
        for name in ("summary.json", "summary.md", "curves.png"):
            s.attach(os.path.join(summary.path, name), to_parent=True)
