from kfp import dsl
from kfp.dsl import Dataset, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def prepare_op(config: dict, train: str, valid: str, test: str, data: Output[Dataset]):
    """Load and check the data, then split it into train/valid/test/grow JSONL."""
    from dataclasses import replace

    from rest.config import DataConfig, section_from_dict
    from rest.data import prepare
    from rest.runtime import step

    data_cfg = replace(section_from_dict(DataConfig, config, "data"), train=train, valid=valid, test=test)
    with step("prepare") as s:
        prepared = prepare(data_cfg, data.path)
        for name, st in prepared.stats.items():
            data.metadata[f"{name}_rows"] = st["rows"]
            data.metadata[f"{name}_sha256"] = st["sha256"]
            s.metric(**{f"{name}_rows": st["rows"]})
        s.publish(data.path, "data", data)
