"""One config dataclass per ReST step: the single source of defaults, help text and checks.

The CLI flags (``--sample.temperature 0.8``), the YAML config files (``sample: {temperature:
0.8}``) and the values compiled into the pipeline's tasks all come from these classes.
Every field carries its help text in ``metadata["help"]``; ``__post_init__`` rejects bad
values with a message that names the field and how to fix it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from rest.model.device import COMPUTE_TYPES, DEVICE_HELP, PRECISIONS, check_processes
from rest.model.device import check_setting as _device_problem

# Where the project keeps its bundled data and the BC policy its bootstrap command built.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(PROJECT_ROOT, "data", "libreoffice-de-en")
DEFAULT_POLICY_DIR = os.path.join(PROJECT_ROOT, "models", "bc-libreoffice-de-en")


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the fix."""


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def _check_device(value: str, where: str) -> None:
    """A device setting's spelling (whether this machine has that device is `validate`'s and the step's check)."""
    problem = _device_problem(value, where)
    _check(problem is None, where, problem or "")


def _check_compute_type(value: str, where: str) -> None:
    _check(value in COMPUTE_TYPES, where, f"is {value!r}; use one of {', '.join(COMPUTE_TYPES)}")


_COMPUTE_TYPE_HELP = ("CTranslate2 compute type (backend=ctranslate2): default (the converted float32 weights, the "
                      "same numbers as the torch model), auto (the fastest the device supports), float16, bfloat16 or "
                      "int8_float16 on a GPU, int8 or int8_float32 on the CPU, float32.")


OVERLONG_ACTIONS = ("skip", "error")
LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")  # de, en, pt-BR, deu_Latn
MAX_NUM_SAMPLES = 1024        # the paper samples 25-100; more is a typo or days of CPU
MAX_LENGTH_RATIO = 10.0       # a translation 10x its source's tokens is runaway generation


@dataclass
class DataConfig:
    """Parallel data: where it is and which columns hold source and target."""

    train: str = field(default=os.path.join(DEFAULT_DATA_DIR, "train.tsv"), metadata=_help(
        "Training pairs: a local path or s3:// URI to a TSV (header row naming the columns) or JSONL file."))
    valid: str = field(default=os.path.join(DEFAULT_DATA_DIR, "valid.tsv"), metadata=_help(
        "Validation pairs (checkpoint selection). Empty: split off `valid_fraction` of train by seed."))
    test: str = field(default=os.path.join(DEFAULT_DATA_DIR, "test.tsv"), metadata=_help(
        "Held-out test pairs (reported metrics). Empty: split off `test_fraction` of train by seed."))
    source_column: str = field(default="de", metadata=_help("Column (TSV header / JSON key) of the source text."))
    target_column: str = field(default="en", metadata=_help("Column of the reference translation."))
    id_column: str = field(default="id", metadata=_help(
        "Column with a stable row id; when absent, ids are `<file>:<line>`."))
    valid_fraction: float = field(default=0.02, metadata=_help(
        "Share of train split off as validation when `valid` is empty."))
    test_fraction: float = field(default=0.05, metadata=_help(
        "Share of train split off as test when `test` is empty."))
    sources: str = field(default="", metadata=_help(
        "Source-only text (no references), local path or s3:// URI: a .txt file with one sentence per line, "
        "or TSV/JSONL with the source column. Grow samples for these too; they need a reference-free reward "
        "(score.reward=reward_model). Empty: none."))
    max_sources: int = field(default=0, metadata=_help(
        "Source-only sentences used per Grow step (0 = all of `sources`); chosen by seed."))
    max_valid: int = field(default=500, metadata=_help(
        "Validation sentences used for checkpoint selection (0 = all); keeps each check fast."))
    max_test: int = field(default=0, metadata=_help("Test sentences evaluated (0 = all)."))
    grow_sources: int = field(default=3000, metadata=_help(
        "Training sources that each Grow step samples for (0 = all of train); chosen by seed."))
    max_words: int = field(default=200, metadata=_help(
        "Longest source or target in words (and in characters: 30 x this). Longer rows are over-long: "
        "see `overlong`."))
    overlong: str = field(default="skip", metadata=_help(
        "What to do with an over-long row (over `max_words`, or a line over the byte cap): skip (drop it, "
        "count it and report the count and the first few file:line in the log, the prepare step's "
        "metadata and MLflow) or error (stop at the first one, naming file:line). Malformed rows (wrong "
        "column count, bad encoding, empty text) are always errors. Training likewise skips pairs over "
        "the model's maximum length in tokens, and generation truncates such sources."))
    seed: int = field(default=13, metadata=_help("Seed for the splits and the Grow subset."))
    grow: str = field(default="", metadata=_help(
        "Grow pool: pairs (TSV/JSONL, same columns) whose sources Grow samples for instead of a subset of train; "
        "their targets are what the reward checks against (e.g. final answers only, with worked solutions in "
        "train). The references-only control then continues on train. Empty: `grow_sources` rows of train."))
    hard_test: str = field(default="", metadata=_help(
        "A second held-out test file, e.g. problems harder than any training example (easy-to-hard "
        "generalisation); every evaluation also reports it (hard_reward, hard_accuracy). Empty: none."))
    source_lang: str = field(default="", metadata=_help(
        "Language of the sources, an ISO 639-1 code (de), said once for every family: mapped to NLLB's "
        "deu_Latn, mBART-50's de_DE, M2M100's de, T5's task prefix. Empty: source_column's name when it is "
        "such a code (the bundled data: de), else the policy's own setting. See docs/models.md."))
    target_lang: str = field(default="", metadata=_help(
        "Language of the translations, an ISO 639-1 code (en): for a multilingual policy (NLLB, M2M100, "
        "mBART-50) its code is the forced first generated token; a multi-target Marian reads it as >>xx<<; "
        "T5 names it in the prefix. Empty: target_column's name when it is such a code, else the policy's own."))
    source_lang_code: str = field(default="", metadata=_help(
        "The policy's own code for the source language (deu_Latn, de_DE, de), when the ISO mapping picks the "
        "wrong one (e.g. a script variant); overrides source_lang."))
    target_lang_code: str = field(default="", metadata=_help(
        "The policy's own code for the target language (eng_Latn, en_XX, en, or a Marian >>fra<< token); "
        "overrides target_lang."))
    source_prefix: str = field(default="", metadata=_help(
        "Text put before every source, e.g. 'translate German to English: ' for T5. Empty: the family's default "
        "(T5: its task_specific_params prefix for the pair, else one built from the language names; a "
        "multi-target Marian: the >>xx<< token; others: none). 'none': no prefix at all."))

    def __post_init__(self):
        where = "data"
        for name in ("source_lang", "target_lang"):
            v = getattr(self, name)
            _check(not v or LANGUAGE_CODE.match(v) is not None, f"{where}.{name}",
                   f"is {v!r}; use an ISO 639-1 code such as de or en (or the policy's own code in {name}_code)")
        for name in ("source_lang_code", "target_lang_code"):
            v = getattr(self, name)
            _check(v == v.strip() and not any(c.isspace() for c in v), f"{where}.{name}",
                   f"is {v!r}; a language code has no spaces, e.g. deu_Latn, de_DE or de")
        _check("\n" not in self.source_prefix, f"{where}.source_prefix",
               "holds a line break; give the prefix on one line, e.g. 'translate German to English: '")
        _check(bool(self.train), f"{where}.train", "is empty; give a TSV/JSONL path or s3:// URI")
        _check(self.source_column != self.target_column, f"{where}.source_column",
               f"equals target_column ({self.target_column!r}); name two different columns")
        for name in ("valid_fraction", "test_fraction"):
            v = getattr(self, name)
            _check(0.0 < v < 0.5, f"{where}.{name}", f"is {v}; use a share between 0 and 0.5, e.g. 0.05")
        for name in ("max_valid", "max_test", "grow_sources", "max_sources"):
            _check(getattr(self, name) >= 0, f"{where}.{name}", "must be >= 0 (0 means all)")
        _check(self.max_words >= 1, f"{where}.max_words", "must be >= 1")
        _check(self.overlong in OVERLONG_ACTIONS, f"{where}.overlong",
               f"is {self.overlong!r}; use skip (drop over-long rows, counted and reported) or error")


@dataclass
class BootstrapConfig:
    """The starting (BC) policy: a given model directory, or one trained from scratch with NLL."""

    policy: str = field(default=DEFAULT_POLICY_DIR, metadata=_help(
        "Hugging Face seq2seq model directory (or s3:// URI) to start from. Empty: train a tiny "
        "model from scratch on the training split (the paper's BC policy)."))
    vocab_size: int = field(default=4000, metadata=_help("Joint BPE vocabulary size of a trained tokenizer."))
    d_model: int = field(default=128, metadata=_help("Hidden size of a from-scratch model."))
    ffn_dim: int = field(default=512, metadata=_help("Feed-forward size of a from-scratch model."))
    layers: int = field(default=3, metadata=_help("Encoder and decoder layers of a from-scratch model."))
    heads: int = field(default=4, metadata=_help("Attention heads; must divide d_model."))
    dropout: float = field(default=0.1, metadata=_help("Dropout of a from-scratch model."))
    learning_rate: float = field(default=2e-3, metadata=_help("Peak learning rate (pre-LN tolerates 2e-3)."))
    warmup_steps: int = field(default=300, metadata=_help("Linear warm-up steps, then inverse-sqrt decay."))
    batch_tokens: int = field(default=6000, metadata=_help("Source+target tokens per batch (length-bucketed)."))
    max_epochs: int = field(default=60, metadata=_help("Upper bound on epochs; early stopping ends sooner."))
    eval_every: int = field(default=500, metadata=_help("Optimizer steps between validation chrF checks."))
    patience: int = field(default=4, metadata=_help(
        "Stop after this many checks without a better validation chrF (convergence)."))
    max_minutes: float = field(default=120.0, metadata=_help("Wall-clock budget for training (minutes)."))
    converge: bool = field(default=False, metadata=_help(
        "With a given policy: first continue its NLL training on the training split until validation reward "
        "stops improving for `patience` checks (every `eval_every` steps; or max_epochs / max_minutes), and use "
        "that as the run's BC policy: the paper's BC trained to convergence on D. ReST and the references-only "
        "control then start from the same converged point, so a gain over the control is not just the "
        "supervised training the given model still lacked on your data. For adapting a model to your own "
        "domain's parallel data. A from-scratch policy (policy '') always trains this way."))
    converge_learning_rate: float = field(default=5e-4, metadata=_help(
        "Peak learning rate of the converge training of a given policy (linear warm-up over "
        "converge_warmup_steps, then inverse-sqrt decay)."))
    converge_warmup_steps: int = field(default=30, metadata=_help("Warm-up steps of the converge training."))
    trust_remote_code: bool = field(default=False, metadata=_help(
        "Let a model directory run its own Python code. Off: only safetensors weights of known architectures load."))
    seed: int = field(default=13, metadata=_help("Seed for initialisation and batching."))
    architecture: str = field(default="seq2seq", metadata=_help(
        "A from-scratch policy's kind: seq2seq (a tiny pre-LN mBART-style encoder-decoder) or causal (a tiny "
        "Llama-style decoder-only LM with rotary positions, reading a prompt and writing the completion)."))
    tokenizer: str = field(default="bpe", metadata=_help(
        "A from-scratch policy's tokenizer: bpe (joint BPE of vocab_size tokens) or char (one token per character "
        "seen in the training data; for small alphabets such as the arithmetic task)."))
    prompt: str = field(default="auto", metadata=_help(
        "Causal policies: how a source becomes the prompt, recorded in the policy's lineage (rest_policy.json) so "
        "every later step uses it: auto (the tokenizer's chat template when it has one, else translation; a "
        "policy that recorded one keeps it), translation (an instruction, the source, then 'Translation:'), chat "
        "(that instruction as a user message through the tokenizer's chat template), source (the source itself, "
        "e.g. '347+85='), or your own template holding {source}. Seq2seq policies ignore it."))
    max_positions: int = field(default=256, metadata=_help(
        "Longest sequence of a from-scratch causal policy (prompt + completion, in tokens)."))
    threads: int = field(default=0, metadata=_help("torch CPU threads of the bootstrap training (0 = all cores)."))
    valid_max_length_ratio: float = field(default=2.0, metadata=_help(
        "Validation checks stop an output at this many times its source's token count (plus 10)."))
    valid_backend: str = field(default="hf", metadata=_help(
        "Generation engine of the validation checks while training from scratch: hf or ctranslate2 (faster on "
        "CPU; models it cannot convert fall back to hf)."))
    device: str = field(default="auto", metadata=_help(
        DEVICE_HELP + " Training from scratch on a GPU uses bf16 autocast where the GPU has it (else fp16)."))

    def __post_init__(self):
        w = "bootstrap"
        _check(self.architecture in ("seq2seq", "causal"), f"{w}.architecture",
               f"is {self.architecture!r}; use seq2seq or causal")
        _check(self.tokenizer in ("bpe", "char"), f"{w}.tokenizer", f"is {self.tokenizer!r}; use bpe or char")
        _check(self.prompt in ("auto", "translation", "chat", "source") or "{source}" in self.prompt,
               f"{w}.prompt", f"is {self.prompt!r}; use auto, translation, chat, source or a template holding {{source}}")
        _check(self.max_positions >= 16, f"{w}.max_positions", "must be >= 16")
        _check(self.valid_backend in ("hf", "ctranslate2"), f"{w}.valid_backend",
               f"is {self.valid_backend!r}; use hf or ctranslate2")
        _check(0 < self.valid_max_length_ratio <= MAX_LENGTH_RATIO, f"{w}.valid_max_length_ratio",
               f"must be > 0 and at most {MAX_LENGTH_RATIO:g}, e.g. 2.0")
        _check(self.threads >= 0, f"{w}.threads", "must be >= 0 (0 = all cores)")
        _check_device(self.device, f"{w}.device")
        _check(self.vocab_size >= 100, f"{w}.vocab_size", "must be >= 100")
        _check(self.d_model % self.heads == 0 if self.heads > 0 else False, f"{w}.heads",
               f"must be > 0 and divide d_model ({self.d_model})")
        _check(self.layers >= 1 and self.ffn_dim >= 1, f"{w}.layers", "layers and ffn_dim must be >= 1")
        _check(0.0 <= self.dropout < 1.0, f"{w}.dropout", "must be in [0, 1)")
        _check(self.learning_rate > 0, f"{w}.learning_rate", "must be > 0, e.g. 2e-3")
        _check(self.batch_tokens >= 64, f"{w}.batch_tokens", "must be >= 64")
        _check(self.max_epochs >= 1 and self.eval_every >= 1 and self.patience >= 1,
               f"{w}.max_epochs", "max_epochs, eval_every and patience must be >= 1")
        _check(self.warmup_steps >= 0, f"{w}.warmup_steps", f"is {self.warmup_steps}; must be >= 0 (0 = no warm-up)")
        _check(self.max_minutes > 0, f"{w}.max_minutes", "must be > 0")
        _check(self.converge_learning_rate > 0, f"{w}.converge_learning_rate", "must be > 0, e.g. 5e-4")
        _check(self.converge_warmup_steps >= 0, f"{w}.converge_warmup_steps", "must be >= 0 (0 = no warm-up)")


@dataclass
class SampleConfig:
    """Grow: how many candidates the policy samples per source, and how."""

    num_samples: int = field(default=8, metadata=_help("Candidates sampled per source (paper: 25-100)."))
    temperature: float = field(default=0.8, metadata=_help("Sampling temperature (paper: 0.8); must be > 0."))
    top_k: int = field(default=0, metadata=_help("Sample only from the k most likely tokens (0 = off)."))
    max_length_ratio: float = field(default=2.0, metadata=_help(
        "Stop a candidate at this many times its source's token count (plus 10)."))
    batch_sentences: int = field(default=64, metadata=_help(
        "Sources per generate() call; sources are bucketed by length so a batch pads little."))
    include_references: bool = field(default=True, metadata=_help(
        "Add the human reference of every source to the grown set (paper: D_g = samples + D)."))
    num_shards: int = field(default=1, metadata=_help(
        "Split the sources into this many shards; the pipeline samples them in parallel tasks."))
    threads: int = field(default=0, metadata=_help("torch CPU threads (0 = all cores)."))
    seed: int = field(default=13, metadata=_help("Seed; with the Grow index, fixes every sample."))
    backend: str = field(default="ctranslate2", metadata=_help(
        "Generation engine: hf (Hugging Face generate(), the reference) or ctranslate2 (the same weights "
        "converted in memory and run by CTranslate2: several times faster on CPU, same sample quality; "
        "models it cannot convert fall back to hf). See BENCHMARKS.md."))
    device: str = field(default="auto", metadata=_help(DEVICE_HELP + " Both backends run there."))
    compute_type: str = field(default="default", metadata=_help(_COMPUTE_TYPE_HELP))

    def __post_init__(self):
        w = "sample"
        _check_device(self.device, f"{w}.device")
        _check_compute_type(self.compute_type, f"{w}.compute_type")
        _check(self.num_samples >= 1, f"{w}.num_samples", f"is {self.num_samples}; sample at least 1 candidate")
        _check(self.num_samples <= MAX_NUM_SAMPLES, f"{w}.num_samples",
               f"is {self.num_samples}, over the cap of {MAX_NUM_SAMPLES}; the paper samples 25-100 per source "
               "(each candidate costs a full decode): use e.g. 8-100")
        _check(self.temperature > 0, f"{w}.temperature",
               f"is {self.temperature}; must be > 0 (0.8 in the paper; use num_samples=1 for greedy-like)")
        _check(self.top_k >= 0, f"{w}.top_k", "must be >= 0 (0 = off)")
        _check(0 < self.max_length_ratio <= MAX_LENGTH_RATIO, f"{w}.max_length_ratio",
               f"is {self.max_length_ratio}; must be > 0 and at most {MAX_LENGTH_RATIO:g} (a translation is "
               "rarely over twice its source), e.g. 2.0")
        _check(self.batch_sentences >= 1, f"{w}.batch_sentences", "must be >= 1")
        _check(self.num_shards >= 1, f"{w}.num_shards", "must be >= 1")
        _check(self.threads >= 0, f"{w}.threads", "must be >= 0")
        _check(self.backend in ("hf", "ctranslate2"), f"{w}.backend",
               f"is {self.backend!r}; use hf or ctranslate2 (needs `pip install ctranslate2`)")


@dataclass
class ScoreConfig:
    """The reward R(x, y): a registered name, a learned reward model, or your own function."""

    reward: str = field(default="chrf1", metadata=_help(
        "Reward name: chrf1, chrf, bleu (sentence-level sacrebleu vs the reference, in [0,1]; chrf1 is chrF with "
        "beta 1, which weighs precision and recall alike, so picking the best sample by it does not pick the "
        "longest: by chrf, whose beta 2 weighs recall twice, ReST's outputs grew 8 % longer and BLEU fell), "
        "reward_model (see reward_model_path), or a dotted path 'module:function' (needs allow_code_reward)."))
    reward_model_path: str = field(default="", metadata=_help(
        "Learned reward model directory or s3:// URI used when reward=reward_model (train one with "
        "`python -m rest reward-model`). Empty with reward=reward_model: the pipeline trains one (settings in "
        "the reward_model section) on the first Grow's samples of the sources that have references."))
    allow_code_reward: bool = field(default=False, metadata=_help(
        "Allow reward='module:function': this imports and runs that code. Off by default."))
    true_metric: str = field(default="chrf", metadata=_help(
        "Reference-based metric (chrf or bleu) every validation and evaluation also reports beside the "
        "training reward: when the reward rises while this falls, the step is flagged as reward hacking "
        "(see loop.on_reward_hacking). none: no separate metric (a verifiable reward is the truth itself)."))
    batch_size: int = field(default=256, metadata=_help("Candidates scored per call."))
    numeric_rel_tol: float = field(default=1e-6, metadata=_help(
        "reward=numeric: relative tolerance between the candidate's final number and the reference's."))
    regex_pattern: str = field(default="", metadata=_help(
        "reward=regex: the pattern a whole candidate must match ({reference} and {source} stand for the escaped "
        "texts). Empty: the reference is the pattern."))
    case_sensitive: bool = field(default=False, metadata=_help("reward=exact_match: compare case-sensitively."))
    sandbox_wall_seconds: float = field(default=10.0, metadata=_help(
        "reward=python_tests: wall-clock limit of one candidate's run in the sandbox (its tests included)."))
    device: str = field(default="auto", metadata=_help(
        DEVICE_HELP + " Used by a learned reward (reward=reward_model); metric rewards run on the CPU."))

    def __post_init__(self):
        w = "score"
        _check_device(self.device, f"{w}.device")
        _check(bool(self.reward), f"{w}.reward", "is empty; use chrf, chrf1, bleu, reward_model, a verifiable reward "
               "(exact_match, numeric, regex, python_tests, arithmetic) or module:function")
        _check(self.numeric_rel_tol >= 0, f"{w}.numeric_rel_tol", "must be >= 0, e.g. 1e-6")
        _check(self.sandbox_wall_seconds > 0, f"{w}.sandbox_wall_seconds", "must be > 0 seconds, e.g. 10")
        if ":" in self.reward:
            _check(self.allow_code_reward, f"{w}.reward",
                   f"{self.reward!r} is a dotted path: it runs code, so set score.allow_code_reward=true to allow it")
        _check(self.true_metric in ("chrf", "bleu", "none") or self.true_metric == self.reward, f"{w}.true_metric",
               f"is {self.true_metric!r}; use chrf or bleu (a reference-based metric), or none (no separate metric, "
               "no reward-hacking guard: e.g. for a verifiable reward, which is itself the truth)")
        _check(self.batch_size >= 1, f"{w}.batch_size", "must be >= 1")


@dataclass
class FilterConfig:
    """Improve's filter: keep candidates whose reward passes a rising threshold."""

    thresholds: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7], metadata=_help(
        "Rising reward thresholds, one per Improve step (rewards in [0,1]); their count is I."))
    mode: str = field(default="global", metadata=_help(
        "global: keep reward >= threshold. percentile: keep a source's candidates at or above "
        "its own percentile given by `percentiles`."))
    percentiles: list[float] = field(default_factory=lambda: [50.0, 70.0, 90.0], metadata=_help(
        "Per-source percentiles (0-100), one per Improve step, used when mode=percentile."))
    guard: str = field(default="raise", metadata=_help(
        "When the first threshold is not above the grown set's mean reward (paper's rule): "
        "raise = lift the whole schedule so that τ_1 sits just above the mean (later steps keep their "
        "spacing), error = stop with an error, off = keep it."))
    max_per_source: int = field(default=1, metadata=_help(
        "Keep at most this many best candidates per source (0 = no cap, the paper's filter; ReST-EM uses 10). "
        "1: distil each source's best sample if it passes the threshold: on the bundled data, from a converged "
        "BC, the recipe that gained over BC with BLEU never falling (BENCHMARKS.md, issue 15)."))
    keep_references: bool = field(default=False, metadata=_help(
        "References go through the same filter as samples (they score 1.0 under a reference-based reward). Off: "
        "Improve trains on the policy's own samples only, as in the paper; with them, the kept set at high "
        "thresholds is mostly references and Improve becomes the references-only control."))
    dedupe: bool = field(default=False, metadata=_help(
        "Keep each distinct candidate of a source once (ReST-EM: a correct solution sampled twice is one example)."))
    accumulate: bool = field(default=False, metadata=_help(
        "Each Grow step's kept set also holds the previous Grow step's (same Improve step), deduplicated and capped "
        "by max_per_source, newest first: ReST-EM's Improve trains on the union of what every iteration verified."))

    def __post_init__(self):
        w = "filter"
        _check(self.mode in ("global", "percentile"), f"{w}.mode", f"is {self.mode!r}; use global or percentile")
        _check(self.guard in ("raise", "error", "off"), f"{w}.guard", f"is {self.guard!r}; use raise, error or off")
        _check(len(self.thresholds) >= 1, f"{w}.thresholds", "is empty; give at least one threshold, e.g. [0.5, 0.6, 0.7]")
        for k, (a, b) in enumerate(zip(self.thresholds, self.thresholds[1:])):
            _check(b > a, f"{w}.thresholds", f"must rise: step {k + 2} ({b}) is not above step {k + 1} ({a})")
        for t in self.thresholds:
            _check(0.0 <= t <= 1.0, f"{w}.thresholds", f"{t} is outside the reward range [0, 1]")
        if self.mode == "percentile":
            _check(len(self.percentiles) == len(self.thresholds), f"{w}.percentiles",
                   f"has {len(self.percentiles)} values but thresholds has {len(self.thresholds)}; give one per Improve step")
            for p in self.percentiles:
                _check(0.0 <= p < 100.0, f"{w}.percentiles", f"{p} is outside [0, 100)")
        _check(self.max_per_source >= 0, f"{w}.max_per_source", "must be >= 0 (0 = no cap)")

    @property
    def improve_steps(self) -> int:
        return len(self.thresholds)


@dataclass
class FinetuneConfig:
    """Improve's fine-tune: BC (NLL) on the filtered set, continuing from the previous policy."""

    learning_rate: float = field(default=5e-4, metadata=_help("Learning rate of the first Improve step."))
    lr_decay: float = field(default=0.5, metadata=_help(
        "Each later Improve step multiplies the learning rate by this (paper: lower rate per step)."))
    epochs: int = field(default=1, metadata=_help(
        "Passes over the filtered set per Improve step. 1 since 2026-12-03: on the default run it is as good "
        "as 2 on every test figure (three seeds, BENCHMARKS.md) at two thirds of the CPU."))
    batch_tokens: int = field(default=6000, metadata=_help("Source+target tokens per batch (length-bucketed)."))
    warmup_steps: int = field(default=30, metadata=_help("Linear warm-up steps of each Improve step."))
    loss: str = field(default="nll", metadata=_help(
        "nll: behaviour cloning on what passed (the paper's best). reward_weighted: NLL weighted by reward."))
    eval_every: int = field(default=0, metadata=_help(
        "Optimizer steps between validation checks (0 = once per epoch); the best checkpoint is kept."))
    checkpoint_every: int = field(default=50, metadata=_help(
        "Optimizer steps between resumable checkpoints (a killed step resumes from the last one)."))
    threads: int = field(default=0, metadata=_help("torch CPU threads (0 = all cores)."))
    seed: int = field(default=13, metadata=_help("Seed for batching and dropout."))
    max_steps: int = field(default=0, metadata=_help(
        "Optimizer steps per Improve step (0 = `epochs` passes over the filtered set): a fixed budget per "
        "iteration however large the kept set grows."))
    from_base: bool = field(default=False, metadata=_help(
        "Each Improve step fine-tunes the BC (base) policy afresh instead of continuing from the previous one "
        "(ReST-EM); Grow still samples with the latest policy. The lineage's optimizer_steps_since_bc then "
        "counts every Improve step's steps, so the control gets as many as all iterations took together."))
    include_train: bool = field(default=False, metadata=_help(
        "Also train on the BC training pairs (the train split) beside the filtered set: ReST-EM's recipe trains "
        "on the worked solutions plus the verified samples."))
    valid_max_length_ratio: float = field(default=2.0, metadata=_help(
        "Validation checks stop an output at this many times its source's token count (plus 10); worked "
        "solutions run longer than their problem (the arithmetic preset uses 4)."))
    lora_r: int = field(default=0, metadata=_help(
        "LoRA rank (peft): train low-rank adapters instead of all weights, then merge them into the saved policy "
        "(recorded in its lineage); 0 = full fine-tuning."))
    lora_alpha: int = field(default=16, metadata=_help("LoRA scaling numerator (the update is scaled by alpha/r)."))
    lora_dropout: float = field(default=0.0, metadata=_help("Dropout on the LoRA adapters' input."))
    lora_target_modules: str = field(default="all-linear", metadata=_help(
        "Modules that get adapters: all-linear (every linear layer but the output head) or comma-separated "
        "module names, e.g. q_proj,v_proj."))
    valid_backend: str = field(default="ctranslate2", metadata=_help(
        "Generation engine of the greedy validation checks: ctranslate2 (the same weights converted in "
        "memory: identical greedy output on the shipped policy, about 2x faster on CPU) or hf (Hugging Face "
        "generate(), the reference). Models CTranslate2 cannot convert fall back to hf."))
    device: str = field(default="auto", metadata=_help(DEVICE_HELP + " The control trains there too."))
    precision: str = field(default="auto", metadata=_help(
        "Mixed precision of training: auto (bf16 autocast on a GPU that has bf16, else fp16 with loss scaling; "
        "fp32 on the CPU), fp32, bf16, or fp16 (GPU only). Weights and optimizer state stay fp32."))
    processes: str = field(default="auto", metadata=_help(
        "Data-parallel training processes (torch DDP), one per device, with the same global batch (batch_tokens) "
        "whatever their number: auto (one per visible GPU, i.e. the step's accelerator_count in the cluster "
        "config, when it computes on the GPU; 1 on the CPU) or a number (on the CPU: gloo processes sharing the cores)."))

    def __post_init__(self):
        w = "finetune"
        _check(self.max_steps >= 0, f"{w}.max_steps", "must be >= 0 (0 = run `epochs`)")
        _check(0 < self.valid_max_length_ratio <= MAX_LENGTH_RATIO, f"{w}.valid_max_length_ratio",
               f"must be > 0 and at most {MAX_LENGTH_RATIO:g}, e.g. 2.0")
        _check(self.lora_r >= 0, f"{w}.lora_r", "must be >= 0 (0 = full fine-tuning; 8-64 is usual)")
        _check(self.lora_alpha >= 1, f"{w}.lora_alpha", "must be >= 1, e.g. 16")
        _check(0.0 <= self.lora_dropout < 1.0, f"{w}.lora_dropout", "must be in [0, 1)")
        _check(bool(self.lora_target_modules.strip()), f"{w}.lora_target_modules",
               "is empty; use all-linear or module names such as q_proj,v_proj")
        _check_device(self.device, f"{w}.device")
        _check(self.precision in PRECISIONS, f"{w}.precision",
               f"is {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        problem = check_processes(self.processes)
        _check(problem is None, f"{w}.processes", problem or "")
        _check(not (":" in self.device and self.processes not in ("auto", "1")), f"{w}.processes",
               f"is {self.processes} but device {self.device} names one GPU; use device cuda (or auto) to train "
               f"on {self.processes} GPUs, or processes 1")
        _check(not (self.device == "cpu" and self.precision == "fp16"), f"{w}.precision",
               "is fp16 but device is cpu; fp16 training needs a GPU (use fp32 or bf16)")
        _check(self.valid_backend in ("hf", "ctranslate2"), f"{w}.valid_backend",
               f"is {self.valid_backend!r}; use hf or ctranslate2")
        _check(self.learning_rate > 0, f"{w}.learning_rate", "must be > 0, e.g. 5e-4")
        _check(0 < self.lr_decay <= 1, f"{w}.lr_decay", "must be in (0, 1]")
        _check(self.epochs >= 1, f"{w}.epochs", "must be >= 1")
        _check(self.batch_tokens >= 64, f"{w}.batch_tokens", "must be >= 64")
        _check(self.loss in ("nll", "reward_weighted"), f"{w}.loss", f"is {self.loss!r}; use nll or reward_weighted")
        _check(self.eval_every >= 0, f"{w}.eval_every", f"is {self.eval_every}; must be >= 0 (0 = once per epoch)")
        _check(self.checkpoint_every >= 1, f"{w}.checkpoint_every",
               f"is {self.checkpoint_every}; must be >= 1 (optimizer steps between resumable checkpoints)")
        _check(self.warmup_steps >= 0, f"{w}.warmup_steps", f"is {self.warmup_steps}; must be >= 0 (0 = no warm-up)")
        _check(self.threads >= 0, f"{w}.threads", "must be >= 0 (0 = all cores)")

    def learning_rate_for(self, improve_step: int) -> float:
        """Learning rate of Improve step ``improve_step`` (1-based)."""
        return self.learning_rate * self.lr_decay ** (improve_step - 1)


@dataclass
class EvaluateConfig:
    """Evaluation on the held-out test split."""

    decode: str = field(default="greedy", metadata=_help("greedy or beam."))
    beam_size: int = field(default=4, metadata=_help("Beam width when decode=beam."))
    best_of_n: int = field(default=0, metadata=_help(
        "Also report best-of-N reward: sample N per test source, keep the best (0 = off)."))
    best_of_n_temperature: float = field(default=1.0, metadata=_help(
        "Sampling temperature of best-of-N. Compare policies at the same value; a colder one also "
        "shows how much of a gain is only a sharper distribution."))
    batch_sentences: int = field(default=64, metadata=_help("Sentences per generate() call."))
    max_length_ratio: float = field(default=2.0, metadata=_help(
        "Stop an output at this many times its source's token count (plus 10); worked solutions run longer "
        "than their problem (the arithmetic preset uses 4)."))
    threads: int = field(default=0, metadata=_help("torch CPU threads (0 = all cores)."))
    backend: str = field(default="ctranslate2", metadata=_help(
        "Generation engine for the test translations: ctranslate2 (the same weights converted in memory; "
        "identical greedy output on the shipped policy, faster on CPU; models it cannot convert fall back "
        "to hf) or hf (Hugging Face generate(), the reference)."))
    device: str = field(default="auto", metadata=_help(DEVICE_HELP + " Both backends run there."))
    compute_type: str = field(default="default", metadata=_help(_COMPUTE_TYPE_HELP))

    def __post_init__(self):
        w = "evaluate"
        _check(0 < self.max_length_ratio <= MAX_LENGTH_RATIO, f"{w}.max_length_ratio",
               f"is {self.max_length_ratio}; must be > 0 and at most {MAX_LENGTH_RATIO:g}, e.g. 2.0")
        _check(self.threads >= 0, f"{w}.threads", "must be >= 0 (0 = all cores)")
        _check_device(self.device, f"{w}.device")
        _check_compute_type(self.compute_type, f"{w}.compute_type")
        _check(self.backend in ("hf", "ctranslate2"), f"{w}.backend",
               f"is {self.backend!r}; use hf or ctranslate2 (needs `pip install ctranslate2`)")
        _check(self.decode in ("greedy", "beam"), f"{w}.decode", f"is {self.decode!r}; use greedy or beam")
        _check(self.beam_size >= 1 and self.best_of_n >= 0 and self.batch_sentences >= 1,
               f"{w}.beam_size", "beam_size and batch_sentences must be >= 1, best_of_n >= 0")
        _check(self.best_of_n_temperature > 0, f"{w}.best_of_n_temperature", "must be > 0, e.g. 1.0")


@dataclass
class LoopConfig:
    """The shape of the ReST loop: G Grow steps, each followed by I Improve steps."""

    grow_steps: int = field(default=1, metadata=_help("G: number of Grow steps (the paper's best: 1-2)."))
    control: bool = field(default=True, metadata=_help(
        "Also train the references-only control: BC continued on the references of the same "
        "sources for as many optimizer steps as all Improve steps took."))
    model_name: str = field(default="rest-de-en", metadata=_help("Registered model name in MLflow."))
    register: bool = field(default=True, metadata=_help(
        "Register the final policy in the MLflow registry and move the `champion` alias to it only when it "
        "is significantly better than the current champion on the test split (else alias `challenger`)."))

    on_reward_hacking: str = field(default="warn", metadata=_help(
        "When an Improve step raises the training reward on validation while the true metric "
        "(score.true_metric) falls by more than hacking_tolerance: warn = flag it in the summary, MLflow and "
        "the task's outputs; rollback = also keep the previous policy (the best by the true metric) and go on; "
        "stop = fail the run at that step."))
    hacking_tolerance: float = field(default=0.002, metadata=_help(
        "Fall of the true metric on validation (in [0, 1] units, e.g. 0.002 = 0.2 chrF) that counts as falling; "
        "smaller moves are noise."))

    def __post_init__(self):
        _check(self.grow_steps >= 1, "loop.grow_steps", f"is {self.grow_steps}; run at least 1 Grow step")
        _check(self.on_reward_hacking in ("warn", "rollback", "stop"), "loop.on_reward_hacking",
               f"is {self.on_reward_hacking!r}; use warn, rollback or stop")
        _check(self.hacking_tolerance >= 0, "loop.hacking_tolerance", "must be >= 0")
        _check(bool(self.model_name.strip()), "loop.model_name", "is empty; name the model to register, e.g. rest-de-en")


@dataclass
class RewardModelConfig:
    """A learned, reference-free reward: a cross-encoder trained to predict a reference-based metric."""

    metric: str = field(default="chrf", metadata=_help(
        "The reference-based metric the model learns to predict from (source, candidate): chrf or bleu."))
    init: str = field(default="", metadata=_help(
        "Hugging Face sequence-classification checkpoint to start from (local path or s3://). Empty: a small "
        "cross-encoder from scratch, using the policy's tokenizer."))
    d_model: int = field(default=128, metadata=_help("Hidden size of a from-scratch reward model."))
    layers: int = field(default=2, metadata=_help("Transformer layers of a from-scratch reward model."))
    heads: int = field(default=4, metadata=_help("Attention heads; must divide d_model."))
    ffn_dim: int = field(default=512, metadata=_help("Feed-forward size of a from-scratch reward model."))
    max_length: int = field(default=192, metadata=_help("Tokens of source + candidate kept per pair."))
    learning_rate: float = field(default=1e-3, metadata=_help("Peak learning rate (linear warm-up, then decay)."))
    epochs: int = field(default=4, metadata=_help("Passes over the training pairs."))
    batch_size: int = field(default=64, metadata=_help("Pairs per optimizer step."))
    valid_fraction: float = field(default=0.1, metadata=_help(
        "Share of sources (all their candidates) held out to pick the best epoch by Kendall τ; as many again form "
        "a test split on which the reported τ / ρ are measured."))
    include_references: bool = field(default=True, metadata=_help(
        "Train on the human references too (their metric is the maximum), so references pass the learned filter."))
    max_pairs: int = field(default=0, metadata=_help("Use at most this many training pairs (0 = all)."))
    ranking_weight: float = field(default=0.0, metadata=_help(
        "Weight of a within-source ranking loss (RankNet: -log sigmoid(score of the better candidate minus the "
        "worse one's), over every pair of one source's candidates whose metric differs) added to the pointwise "
        "MSE. 0 = MSE only. Above 0, batches hold whole sources (all their candidates) and the epoch is picked "
        "by the mean Kendall tau within sources on the selection split: what a filter choosing among one "
        "source's candidates needs, where the MSE model mostly learns how hard a source is."))
    threads: int = field(default=0, metadata=_help("torch CPU threads (0 = all cores)."))
    seed: int = field(default=13, metadata=_help("Seed for the split, initialisation and batching."))
    device: str = field(default="auto", metadata=_help(DEVICE_HELP))

    def __post_init__(self):
        w = "reward_model"
        _check(self.ranking_weight >= 0, f"{w}.ranking_weight", "must be >= 0 (0 = pointwise MSE only; e.g. 1.0)")
        _check_device(self.device, f"{w}.device")
        _check(self.metric in ("chrf", "bleu"), f"{w}.metric", f"is {self.metric!r}; use chrf or bleu")
        _check(self.d_model % self.heads == 0 if self.heads > 0 else False, f"{w}.heads",
               f"must be > 0 and divide d_model ({self.d_model})")
        _check(self.layers >= 1 and self.ffn_dim >= 1, f"{w}.layers", "layers and ffn_dim must be >= 1")
        _check(self.max_length >= 8, f"{w}.max_length", "must be >= 8")
        _check(self.learning_rate > 0, f"{w}.learning_rate", "must be > 0, e.g. 1e-3")
        _check(self.epochs >= 1 and self.batch_size >= 1, f"{w}.epochs", "epochs and batch_size must be >= 1")
        _check(0.0 < self.valid_fraction < 0.5, f"{w}.valid_fraction", "use a share between 0 and 0.5, e.g. 0.1")
        _check(self.max_pairs >= 0 and self.threads >= 0, f"{w}.max_pairs", "max_pairs and threads must be >= 0")


STEP_CONFIGS: dict[str, type] = {
    "data": DataConfig,
    "bootstrap": BootstrapConfig,
    "sample": SampleConfig,
    "score": ScoreConfig,
    "filter": FilterConfig,
    "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig,
    "reward_model": RewardModelConfig,
    "loop": LoopConfig,
}


@dataclass
class RunConfig:
    """A whole ReST run: one section per step."""

    data: DataConfig = field(default_factory=DataConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict | None) -> "RunConfig":
        """Build from a nested dict (a YAML file); unknown sections or keys are errors."""
        raw = dict(raw or {})
        unknown = set(raw) - set(STEP_CONFIGS)
        _check(not unknown, "config", f"unknown section(s) {sorted(unknown)}; known: {sorted(STEP_CONFIGS)}")
        return cls(**{name: section_from_dict(STEP_CONFIGS[name], raw.get(name) or {}, name)
                      for name in STEP_CONFIGS})

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        """Apply ``{"section.field": value}`` overrides (values already typed or strings)."""
        raw = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            _check(section in raw and name in raw[section], key,
                   "unknown setting; see `python pipeline.py run-local --help`")
            ftype = _field_types(STEP_CONFIGS[section])[name]
            raw[section][name] = parse_value(value, ftype, key) if isinstance(value, str) else value
        return RunConfig.from_dict(raw)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def section_from_dict(cls, raw: dict, where: str):
    """Build one step config from a dict, naming unknown keys and wrong types."""
    _check(isinstance(raw, dict), where, f"must be a mapping of settings, got {type(raw).__name__}")
    types = _field_types(cls)
    unknown = set(raw) - set(types)
    _check(not unknown, where, f"unknown setting(s) {sorted(unknown)}; known: {sorted(types)}")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(value, types[name], f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as e:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(f"{where}: {e}") from None


def _coerce(value, ftype, where):
    if isinstance(value, str) and ftype is not str:
        return parse_value(value, ftype, where)
    origin = typing.get_origin(ftype)
    if origin is list:
        _check(isinstance(value, (list, tuple)), where, f"must be a list, got {value!r}")
        (item,) = typing.get_args(ftype)
        return [_coerce(v, item, where) for v in value]
    if ftype is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # KFP passes dict parameters through protobuf Struct, which turns every int into a float.
    if ftype is int and isinstance(value, float) and value.is_integer():
        return int(value)
    # A setting that is a word or a number (finetune.processes: auto or 2) written as a YAML number.
    if ftype is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    ok = isinstance(value, ftype) and not (ftype is int and isinstance(value, bool))
    _check(ok, where, f"must be {ftype.__name__}, got {value!r}")
    return value


def parse_value(text: str, ftype, where: str):
    """Parse a CLI string into the field's type (lists are comma-separated)."""
    try:
        if ftype is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typing.get_origin(ftype) is list:
            (item,) = typing.get_args(ftype)
            return [parse_value(p, item, where) for p in text.split(",") if p.strip()]
        return ftype(text)
    except ValueError:
        name = getattr(ftype, "__name__", str(ftype))
        raise ConfigError(f"{where}: cannot read {text!r} as {name}") from None


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The resolved run config: defaults, then a YAML file, then ``section.field`` overrides."""
    raw = {}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path}: not valid YAML ({e})") from None
        _check(isinstance(raw, dict), f"config file {path}", "must hold a mapping of sections")
        try:
            cfg = RunConfig.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"config file {path}: {e}") from None
    else:
        cfg = RunConfig()
    return cfg.with_overrides(overrides or {})


def add_config_arguments(parser: argparse.ArgumentParser, sections=None) -> None:
    """Add ``--section.field`` flags (help text and defaults from the dataclasses)."""
    for section, cls in STEP_CONFIGS.items():
        if sections is not None and section not in sections:
            continue
        group = parser.add_argument_group(section, (cls.__doc__ or "").strip())
        types = _field_types(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            default = getattr(defaults, f.name)
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            group.add_argument(f"--{section}.{f.name}", dest=f"{section}.{f.name}", default=None,
                               metavar=_metavar(types[f.name]),
                               help=f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%"))


def _metavar(ftype) -> str:
    if typing.get_origin(ftype) is list:
        return "A,B,.."
    return getattr(ftype, "__name__", "VALUE").upper()


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The ``section.field`` flags the user actually gave."""
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def dump_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML, with help text as comments (``rest config`` prints it)."""
    lines = []
    for section, cls in STEP_CONFIGS.items():
        lines.append(f"{section}:  # {(cls.__doc__ or '').strip()}")
        values = getattr(cfg, section)
        for f in dataclasses.fields(cls):
            value = yaml.safe_dump(getattr(values, f.name), default_flow_style=True).strip()
            if value.endswith("\n..."):
                value = value[:-4].strip()
            value = value.removesuffix("...").strip()
            lines.append(f"  {f.name}: {value}  # {f.metadata.get('help', '')}")
    return "\n".join(lines) + "\n"


def markdown_reference() -> str:
    """Every setting with its default and help, as Markdown (docs/config.md is generated from this)."""
    lines = ["# Configuration reference", "",
             "Generated from the config dataclasses in `rest/config.py` by `python -m rest config --markdown`; "
             "a test keeps it in sync. Set a value in a YAML file (`section: {field: value}`) passed with "
             "`--config`, or on the command line as `--section.field value` (lists comma-separated).", ""]
    for section, cls in STEP_CONFIGS.items():
        lines += [f"## `{section}`: {(cls.__doc__ or '').strip()}", "", "| setting | default | meaning |",
                  "|---|---|---|"]
        defaults = cls()
        for f in dataclasses.fields(cls):
            value = getattr(defaults, f.name)
            if isinstance(value, str) and value.startswith(PROJECT_ROOT):
                value = value.replace(PROJECT_ROOT, "<repo>")
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"| `{section}.{f.name}` | `{shown}` | {f.metadata.get('help', '')} |")
        lines.append("")
    return "\n".join(lines)
