from kfp import dsl
from kfp.dsl import Dataset, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def prepare_op(config: dict, train: str, valid: str, test: str, data: Output[Dataset]):
    """Load and check the data, then split it into train/valid/test/grow JSONL."""
    import json
    import os
    from dataclasses import replace

    from rest.config import DataConfig, section_from_dict
    from rest.steps.data import prepare
    from rest_kfp.runtime import step

    data_cfg = replace(section_from_dict(DataConfig, config, "data"), train=train, valid=valid, test=test)
    with step("prepare") as s:
        prepared = prepare(data_cfg, data.path)
        for name in ("train", "valid", "test", "grow"):
            st = prepared.stats[name]
            data.metadata[f"{name}_rows"] = st["rows"]
            data.metadata[f"{name}_sha256"] = st["sha256"]
            s.metric(**{f"{name}_rows": st["rows"]})
        # Over-long rows skipped (data.overlong=skip): the count and the first few file:line, on the
        # artifact, as an MLflow metric, and as a small file on the step's run.
        skipped = prepared.skipped
        data.metadata["overlong_skipped"] = skipped.count
        data.metadata["overlong_examples"] = json.dumps(skipped.examples)
        s.metric(overlong_skipped=skipped.count)
        if skipped.count:
            report = os.path.join(data.path, "overlong_skipped.txt")
            with open(report, "w", encoding="utf-8") as f:
                f.write(f"{skipped.count} over-long rows skipped (data.overlong=skip); the first few:\n")
                f.writelines(f"{e}\n" for e in skipped.examples)
            s.attach(report)
        s.publish(data.path, "data", data)
