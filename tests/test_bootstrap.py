"""The BC bootstrap trains a tokenizer and a tiny model from scratch; own data switches it on."""
import argparse
import os

from rest.steps.bootstrap import bootstrap
from rest.config import BootstrapConfig, DataConfig
from rest.steps.data import prepare
from rest.model.policy import load_policy, policy_info

import pipeline


def test_bootstrap_from_scratch_trains_and_saves_a_loadable_policy(tmp_path, tiny_data):
    data = prepare(DataConfig(train=tiny_data["train"], valid=tiny_data["valid"], test=tiny_data["test"]),
                   str(tmp_path / "data"))
    cfg = BootstrapConfig(policy="", vocab_size=300, d_model=32, ffn_dim=64, layers=1, heads=2, max_epochs=2,
                          eval_every=10, patience=5, batch_tokens=2000, warmup_steps=5)
    info = bootstrap(cfg, data.train, data.valid, str(tmp_path / "bc"), checkpoint_dir=str(tmp_path / "ckpt"))
    assert info["trained"] and info["bc_training"]["steps"] > 0
    assert info["bc_training"]["history"][0]["step"] == 0  # the untrained start is measured too
    model, tok = load_policy(str(tmp_path / "bc"))
    assert model.config.d_model == 32 and len(tok) <= 300
    assert policy_info(str(tmp_path / "bc"))["kind"] == "bc"


def test_given_policy_is_copied_not_trained(tmp_path, tiny_data, tiny_policy):
    data = prepare(DataConfig(train=tiny_data["train"], valid=tiny_data["valid"], test=tiny_data["test"]),
                   str(tmp_path / "data"))
    info = bootstrap(BootstrapConfig(policy=tiny_policy), data.train, data.valid, str(tmp_path / "bc"))
    assert info["trained"] is False and os.path.isfile(tmp_path / "bc" / "config.json")


def _args(**kw):
    base = dict(config=None, train=None, valid=None, test=None, source_column=None, target_column=None, policy=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_own_training_data_without_policy_trains_the_bootstrap_on_it():
    cfg = pipeline.resolve_config(_args(train="my/train.tsv", source_column="fr", target_column="de"))
    assert cfg.bootstrap.policy == "" and cfg.data.train == "my/train.tsv"
    assert cfg.data.valid == "" and cfg.data.test == ""  # cut from train by seed
    assert (cfg.data.source_column, cfg.data.target_column) == ("fr", "de")
    cfg = pipeline.resolve_config(_args(train="t.tsv", valid="v.tsv", test="x.tsv", policy="my/model"))
    assert cfg.bootstrap.policy == "my/model" and cfg.data.valid == "v.tsv"
    default = pipeline.resolve_config(_args())
    assert default.bootstrap.policy.endswith("models/bc-libreoffice-de-en")
