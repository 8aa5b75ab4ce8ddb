"""bench/gpu_report.py: the device peak table and the FLOP/s estimates (no GPU needed)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import gpu_report  # noqa: E402


@pytest.mark.parametrize("name, label, bf16", [
    ("NVIDIA H200", "H200 SXM", 989.5), ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.5), ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
    ("NVIDIA L4", "L4", 121.0), ("Tesla T4", "T4", 65.0)])
def test_peak_by_device_name(name, label, bf16):
    peak = gpu_report.device_peak(name)
    assert peak["label"] == label and peak["bf16_tflops"] == bf16 and peak["source"].startswith("NVIDIA")


def test_unknown_device_has_no_peak():
    assert gpu_report.device_peak("cpu") is None and gpu_report.device_peak("Some Future GPU") is None


def test_flops_estimates_and_share_of_peak():
    machine = {"device": {"name": "NVIDIA H200", "device": "cuda:0"}}
    sampling = {"machine": machine, "parameters": 1_000_000, "compute_type": "default", "paths": {
        "ctranslate2": {"candidates_per_s": 100.0, "tokens_per_s": 5e6, "mean_chrf": 0.5}}}
    finetune = {"machine": machine, "parameters": 1_000_000, "precision": "bf16", "paths": {
        "bucketed": {"real_tokens_per_s": 1e6}}}
    r = gpu_report.build({"x": sampling}, {"x": finetune}, {"rc": 0, "summary": "8 passed"})
    gen = r["sampling"]["x"]["paths"]["ctranslate2"]
    assert gen["achieved_tflops"] == pytest.approx(2 * 1e6 * 5e6 / 1e12)          # 2·P·tokens
    assert gen["share_of_peak"] == pytest.approx(gen["achieved_tflops"] / 67.0)     # fp32 work vs FP32 peak
    train = r["finetune"]["x"]["paths"]["bucketed"]
    assert train["achieved_tflops"] == pytest.approx(6 * 1e6 * 1e6 / 1e12)         # 6·P·tokens
    assert train["share_of_peak"] == pytest.approx(train["achieved_tflops"] / 989.5)  # bf16 vs bf16 peak
    md = gpu_report.markdown(r)
    assert "NVIDIA H200" in md and "8 passed" in md and "989.5" in md
