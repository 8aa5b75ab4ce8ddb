"""Shared fixtures: a tiny policy and tiny data built in seconds from the bundled corpus."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BUNDLED = os.path.join(ROOT, "data", "libreoffice-de-en")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_cluster = pytest.mark.skip(reason="needs a real Kubernetes cluster")
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip_cluster)
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU: {_cuda_missing()}"))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_missing() -> str:
    """Why torch sees no GPU here, in the skip reason."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"


def write_tsv(path, rows, header=("id", "de", "en")):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    return str(path)


def bundled_rows(split: str, n: int) -> list[tuple[str, str, str]]:
    """The first ``n`` rows of a bundled split as (id, de, en)."""
    out = []
    with open(os.path.join(BUNDLED, f"{split}.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            out.append(tuple(line.rstrip("\n").split("\t")))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Small train/valid/test TSV files cut from the bundled corpus."""
    d = tmp_path_factory.mktemp("tiny_data")
    return {
        "train": write_tsv(d / "train.tsv", bundled_rows("train", 300)),
        "valid": write_tsv(d / "valid.tsv", bundled_rows("valid", 16)),
        "test": write_tsv(d / "test.tsv", bundled_rows("test", 16)),
    }


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    """A tiny (d=32) seq2seq policy with a trained tokenizer; untrained weights, saved with safetensors."""
    from rest.model.policy import build_model, save_policy, train_tokenizer

    d = tmp_path_factory.mktemp("tiny_policy") / "policy"
    rows = bundled_rows("train", 500)
    tok = train_tokenizer((t for r in rows for t in (r[1], r[2])), vocab_size=300)
    model = build_model(tok, d_model=32, ffn_dim=64, layers=1, heads=2, dropout=0.0, seed=0)
    save_policy(model, tok, str(d), {"kind": "bc", "optimizer_steps_since_bc": 0})
    return str(d)
