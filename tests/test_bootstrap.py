"""The BC bootstrap trains a tokenizer and a tiny model from scratch; own data switches it on."""
import argparse
import os

from rest.steps.bootstrap import bootstrap
from rest.config import BootstrapConfig, DataConfig
from rest.steps.data import prepare
from rest.model.policy import load_policy, policy_info

import pipeline

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "bc-libreoffice-de-en")


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


def test_converge_continues_a_given_policy_until_patience_and_makes_it_the_bc(tmp_path):
    """bootstrap.converge: the given policy trains on the user's pairs until patience stops it; that is the BC.

    The shipped BC adapted to a "domain" of 48 pairs it has not fitted, validated on 16 of them:
    continued training must lift validation, then patience must end it.
    """
    import json
    import shutil

    from conftest import bundled_rows, write_tsv
    from rest.services.files import sha256_path

    rows = bundled_rows("test", 48)  # pairs the shipped BC never trained on
    paths = {"train": write_tsv(tmp_path / "train.tsv", rows), "valid": write_tsv(tmp_path / "valid.tsv", rows[:16]),
             "test": write_tsv(tmp_path / "test.tsv", rows[:8])}
    data = prepare(DataConfig(**paths), str(tmp_path / "data"))
    given = str(tmp_path / "given")
    shutil.copytree(SHIPPED, given)
    # A policy an earlier ReST run fine-tuned: 40 steps since its own BC.
    with open(os.path.join(given, "rest_policy.json"), encoding="utf-8") as f:
        lineage = json.load(f)
    with open(os.path.join(given, "rest_policy.json"), "w", encoding="utf-8") as f:
        json.dump({**lineage, "kind": "rest", "optimizer_steps_since_bc": 40}, f)
    before = sha256_path(given)
    cfg = BootstrapConfig(policy=given, converge=True, converge_learning_rate=1e-3, converge_warmup_steps=2,
                          eval_every=3, patience=2, max_epochs=200, batch_tokens=1500, valid_backend="ctranslate2")
    info = bootstrap(cfg, data.train, data.valid, str(tmp_path / "bc"), checkpoint_dir=str(tmp_path / "ckpt"))
    run = info["bc_training"]
    assert info["trained"] is True
    assert run["stopped"].startswith("early stop"), run["stopped"]  # patience ended it, not the epoch cap
    assert run["best_valid_reward"] > run["start_valid_reward"] + 0.01 and run["best_step"] > 0, run["history"]
    saved = policy_info(str(tmp_path / "bc"))
    # The converged policy is this run's BC: the control counts steps from here, not the given lineage's.
    assert saved["kind"] == "bc" and saved["optimizer_steps_since_bc"] == 0
    assert saved["converged_from"]["optimizer_steps_since_bc"] == 40
    assert saved["converged_from"]["sha256"] == before
    assert sha256_path(given) == before  # the given directory is left as it was
    assert sha256_path(str(tmp_path / "bc")) != before
    load_policy(str(tmp_path / "bc"))
