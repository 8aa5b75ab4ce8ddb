from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def summarize_op(config: dict, report: Input[Artifact], summary: Output[Artifact], table: Output[Markdown]):
    """The run's summary.json and Markdown table (shown in the KFP UI), with the verdict vs BC and control."""
    import shutil

    from rest.runtime import step
    from rest.summary import write_summary

    with step("summarize") as s:
        result = write_summary(report.path, summary.path, config)
        shutil.copy(summary.path + "/summary.md", table.path)
        for k, v in result["verdict"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                s.metric(**{k: v})
        s.attach(summary.path + "/summary.json")
