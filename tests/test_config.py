import pytest

from rest.config import ConfigError, RunConfig, load_config


def test_defaults_are_valid_and_roundtrip():
    cfg = RunConfig()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.filter.improve_steps == 3


def test_overrides_parse_types():
    cfg = load_config(None, {"sample.temperature": "0.5", "filter.thresholds": "0.4,0.6", "loop.control": "false"})
    assert cfg.sample.temperature == 0.5
    assert cfg.filter.thresholds == [0.4, 0.6]
    assert cfg.loop.control is False


@pytest.mark.parametrize("override, message", [
    ({"sample.temperature": "0"}, "sample.temperature"),
    ({"filter.thresholds": "0.7,0.6"}, "must rise"),
    ({"filter.thresholds": "0.5,1.5"}, "outside the reward range"),
    ({"sample.num_samples": "0"}, "sample.num_samples"),
    ({"loop.grow_steps": "0"}, "loop.grow_steps"),
    ({"sample.nope": "1"}, "unknown setting"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)


def test_docs_config_reference_is_generated_from_the_dataclasses():
    import os

    from rest.config import PROJECT_ROOT, markdown_reference

    with open(os.path.join(PROJECT_ROOT, "docs", "config.md"), encoding="utf-8") as f:
        assert f.read().strip() == markdown_reference().strip(), "run: python -m rest config --markdown > docs/config.md"


def test_yaml_dump_loads_back(tmp_path):
    from rest.config import dump_yaml

    cfg = load_config(None, {"filter.thresholds": "0.3,0.4"})
    p = tmp_path / "c.yaml"
    p.write_text(dump_yaml(cfg))
    assert load_config(str(p)) == cfg
