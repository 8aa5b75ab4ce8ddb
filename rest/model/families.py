"""Translation families: what each kind of Hugging Face seq2seq model needs to translate right.

A policy is a (model, tokenizer) pair, but the pair alone does not say which language to
translate into, and the conventions differ per family:

| family  | model_type        | tokenizer                   | source                  | target / decoder            |
|---------|-------------------|-----------------------------|-------------------------|-----------------------------|
| plain   | mbart, bart       | the project's own BPE, BART | as is                   | as is                       |
| marian  | marian            | MarianTokenizer             | source.spm              | target.spm (``text_target``); a multi-target model reads ``>>xx<<`` before the source |
| nllb    | m2m_100           | NllbTokenizer               | ``deu_Latn`` + text     | ``eng_Latn`` forced first   |
| m2m100  | m2m_100           | M2M100Tokenizer             | ``__de__`` + text       | ``__en__`` forced first     |
| mbart50 | mbart             | MBart50Tokenizer            | ``de_DE`` + text        | ``en_XX`` forced first      |
| t5      | t5, mt5           | T5Tokenizer                 | task prefix + text      | as is                       |

The language pair is said once (``data.source_lang``/``data.target_lang``, ISO 639-1 codes,
or the family's own codes in ``data.*_lang_code``; the data columns' names when they are
such codes) and resolved here into a :class:`Translation`. The bootstrap step writes it into
the policy directory (``rest_translation.json``), and every later step reads it back with
the policy, so a Grow, an Improve, the control, the evaluation and the registered model all
translate the same way. What the tokenizer puts before a target (the language code) is what
generation forces as the first token: ``forced_bos_token_id`` in Hugging Face, the
``target_prefix`` in CTranslate2, and teacher forcing sees the same labels.

Nothing here imports kfp or reads the environment.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

log = logging.getLogger(__name__)

TRANSLATION_FILE = "rest_translation.json"  # written into a policy directory beside the weights
NO_PREFIX = "none"                          # data.source_prefix value that turns a family's default prefix off

FAMILIES = ("plain", "marian", "nllb", "m2m100", "mbart50", "t5")
MULTILINGUAL = ("nllb", "m2m100", "mbart50")
# model_type -> the families it may be (which one is told by the tokenizer).
MODEL_TYPES = {"mbart": ("plain", "mbart50"), "bart": ("plain",), "marian": ("marian",),
               "m2m_100": ("nllb", "m2m100"), "t5": ("t5",), "mt5": ("t5",)}
SERVED = "marian, m2m_100 (NLLB, M2M100), mbart (mBART-50 and the project's own), bart, t5 and mt5"

# ISO 639-1 -> (ISO 639-3 terminology code, English name). The 639-3 code finds NLLB codes
# (deu_Latn) and a multi-target Marian's >>deu<< token; the name builds a T5 task prefix.
_ISO = """af afr Afrikaans|am amh Amharic|ar ara Arabic|as asm Assamese|az aze Azerbaijani|be bel Belarusian|
bg bul Bulgarian|bn ben Bengali|bs bos Bosnian|ca cat Catalan|cs ces Czech|cy cym Welsh|da dan Danish|de deu German|
el ell Greek|en eng English|eo epo Esperanto|es spa Spanish|et est Estonian|eu eus Basque|fa fas Persian|
fi fin Finnish|fr fra French|ga gle Irish|gd gla Scottish Gaelic|gl glg Galician|gu guj Gujarati|ha hau Hausa|
he heb Hebrew|hi hin Hindi|hr hrv Croatian|hu hun Hungarian|hy hye Armenian|id ind Indonesian|ig ibo Igbo|
is isl Icelandic|it ita Italian|ja jpn Japanese|jv jav Javanese|ka kat Georgian|kk kaz Kazakh|km khm Khmer|
kn kan Kannada|ko kor Korean|ky kir Kyrgyz|lb ltz Luxembourgish|lo lao Lao|lt lit Lithuanian|lv lav Latvian|
mg mlg Malagasy|mk mkd Macedonian|ml mal Malayalam|mn mon Mongolian|mr mar Marathi|ms msa Malay|mt mlt Maltese|
my mya Burmese|nb nob Norwegian Bokmal|ne nep Nepali|nl nld Dutch|nn nno Norwegian Nynorsk|no nor Norwegian|
or ori Odia|pa pan Punjabi|pl pol Polish|ps pus Pashto|pt por Portuguese|ro ron Romanian|ru rus Russian|
si sin Sinhala|sk slk Slovak|sl slv Slovenian|so som Somali|sq sqi Albanian|sr srp Serbian|sv swe Swedish|
sw swa Swahili|ta tam Tamil|te tel Telugu|th tha Thai|tl tgl Tagalog|tr tur Turkish|uk ukr Ukrainian|ur urd Urdu|
uz uzb Uzbek|vi vie Vietnamese|xh xho Xhosa|yi yid Yiddish|yo yor Yoruba|zh zho Chinese|zu zul Zulu"""
ISO = {p[0]: (p[1], " ".join(p[2:])) for p in (e.split() for e in _ISO.replace("\n", "").split("|"))}
# NLLB names the individual language where ISO 639-1 names a macrolanguage, and picks a script.
NLLB_CODES = {"ar": "arb_Arab", "az": "azj_Latn", "fa": "pes_Arab", "lv": "lvs_Latn", "mg": "plt_Latn",
              "mn": "khk_Cyrl", "ms": "zsm_Latn", "ne": "npi_Deva", "no": "nob_Latn", "or": "ory_Orya",
              "ps": "pbt_Arab", "sq": "als_Latn", "sw": "swh_Latn", "uz": "uzn_Latn", "yi": "ydd_Hebr",
              "zh": "zho_Hans"}
_CODE_PATTERNS = {"nllb": re.compile(r"^([a-z]{3})_[A-Z][a-z]{3}$"), "mbart50": re.compile(r"^([a-z]{2})_[A-Z]{2}$"),
                  "m2m100": re.compile(r"^__([a-z]{2,3})__$"), "marian": re.compile(r"^>>([a-z]{2,3}(?:_[A-Za-z]+)?)<<$")}


class FamilyError(ValueError):
    """A model or a language setting this project cannot serve; the message says what to set."""


@dataclass(frozen=True)
class Translation:
    """How one policy translates: its family, language codes and source prefix (resolved once)."""

    family: str = "plain"
    source_code: str = ""    # the tokenizer's src_lang (the family's own code), "" when it has none
    target_code: str = ""    # the tokenizer's tgt_lang, "" when it has none
    source_prefix: str = ""  # put before every source text (T5's task, a multi-target Marian's >>xx<< token)

    @property
    def multilingual(self) -> bool:
        return self.family in MULTILINGUAL

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, where: str = TRANSLATION_FILE) -> "Translation":
        names = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) - names or raw.get("family") not in FAMILIES:
            raise FamilyError(f"{where}: not a translation record (keys {sorted(names)}, family one of "
                              f"{', '.join(FAMILIES)}); delete it and run bootstrap again")
        return cls(**{k: str(v) for k, v in raw.items()})


PLAIN = Translation()


# -- which family ---------------------------------------------------------------------------------

def tokenizer_kind(tokenizer) -> str:
    """The tokenizer's class name without the ``Fast`` suffix (``NllbTokenizer``, ``MarianTokenizer``, ...)."""
    return type(tokenizer).__name__.removesuffix("Fast")


def detect_family(model_type: str | None, tokenizer) -> str:
    """The family of a model (its config's ``model_type``) with this tokenizer; FamilyError if not served."""
    kind = tokenizer_kind(tokenizer)
    if model_type not in MODEL_TYPES:
        raise FamilyError(f"model_type {model_type!r} is not a translation family this project serves ({SERVED}); "
                          "start from one of those, e.g. a Marian (opus-mt), NLLB, mBART-50 or T5 directory")
    if model_type == "m2m_100":
        if kind == "NllbTokenizer":
            return "nllb"
        if kind == "M2M100Tokenizer":
            return "m2m100"
        raise FamilyError(f"model_type 'm2m_100' with a {kind}: an M2M100/NLLB model needs its own tokenizer "
                          "(NllbTokenizer or M2M100Tokenizer) saved beside it with save_pretrained()")
    if model_type == "mbart":
        if kind == "MBart50Tokenizer":
            return "mbart50"
        if kind == "MBartTokenizer":
            raise FamilyError("an mBART-25 tokenizer (MBartTokenizer: the language code ends the source and starts "
                              "the decoder) is not served; use an mBART-50 checkpoint (MBart50Tokenizer), e.g. "
                              "facebook/mbart-large-50-many-to-many-mmt")
        return "plain"
    if model_type == "marian" and kind != "MarianTokenizer":
        raise FamilyError(f"model_type 'marian' with a {kind}: a Marian model needs its MarianTokenizer (source.spm, "
                          "target.spm, vocab.json) saved beside it")
    return MODEL_TYPES[model_type][0]


def language_codes(family: str, tokenizer) -> dict[str, str]:
    """The language codes a tokenizer knows, mapped to their tokens (``{"deu_Latn": "deu_Latn"}``,
    M2M100 ``{"de": "__de__"}``, a multi-target Marian ``{"fra": ">>fra<<"}``)."""
    pattern = _CODE_PATTERNS.get(family)
    if pattern is None:
        return {}
    out = {}
    # M2M100's language tokens live outside its vocabulary file (lang_token_to_id).
    for token in [*tokenizer.get_vocab(), *getattr(tokenizer, "lang_token_to_id", {})]:
        m = pattern.match(token)
        if m:
            out[token if family in ("nllb", "mbart50") else m.group(1)] = token
    return out


def _iso(lang: str) -> str:
    return re.split(r"[-_]", lang.strip())[0].lower()


def map_language(family: str, lang: str, codes: dict[str, str], side: str, origin: str = "") -> str:
    """The family's own code for ``lang`` (an ISO 639-1/639-3 code, or already one of ``codes``).

    ``side``: source or target (named in the error); ``origin``: where ``lang`` came from when
    not from ``data.{side}_lang`` itself (e.g. the data column's name).
    """
    where = f"data.{side}_lang"
    said = f"{origin} {lang!r}" if origin else f"{where}={lang!r}"
    if lang in codes:
        return lang
    iso = _iso(lang)
    iso3 = ISO.get(iso, (iso,))[0] if len(iso) == 2 else iso
    if family == "nllb":
        preferred = NLLB_CODES.get(iso)
        if preferred in codes:
            return preferred
        found = sorted(c for c in codes if c.split("_")[0] == iso3)
    elif family == "mbart50":
        found = sorted(c for c in codes if c.split("_")[0] == iso)
    else:  # m2m100 and marian name languages by their ISO code itself
        found = [c for c in (iso, iso3) if c in codes][:1]
    shown = ", ".join(sorted(codes)[:8]) + (", ..." if len(codes) > 8 else "")
    if len(found) == 1:
        return found[0]
    if found:
        raise FamilyError(f"{said} matches several codes of this {family} model ({', '.join(found)}); "
                          f"set {where}_code to the one you mean")
    raise FamilyError(f"{said}: this {family} model has no code for that language (its codes: {shown}); "
                      f"set {where} to an ISO 639-1 code it covers, or {where}_code to one of its codes")


# -- resolving the settings -------------------------------------------------------------------

LANGUAGE_FIELDS = ("source_lang", "target_lang", "source_lang_code", "target_lang_code", "source_prefix",
                   "source_column", "target_column")


def languages_of(cfg: Any) -> dict[str, str]:
    """The language settings of a data config (a ``DataConfig`` or a dict holding its fields)."""
    if cfg is None:
        return {}
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d="": getattr(cfg, k, d))
    return {k: str(get(k, "") or "") for k in LANGUAGE_FIELDS}


def _column_language(column: str, codes: dict[str, str]) -> str:
    """A data column's name when it names a language (``de``, ``en``, ``deu_Latn``), else ""."""
    c = (column or "").strip()
    return c if c.lower() in ISO or c in codes else ""


def resolve(model_type: str | None, tokenizer, *, languages: Any = None, saved: Translation | None = None,
            generation_config: Any = None, task_specific_params: dict | None = None,
            warnings: list[str] | None = None) -> Translation:
    """The :class:`Translation` of a policy, or a FamilyError that says what to set.

    Each setting comes from the first that has it: the explicit config (``data.*_lang_code``,
    then ``data.*_lang``, ``data.source_prefix``), the policy's saved record, the data
    columns' names when they are language codes, and last the model's own defaults (its
    generation config's ``forced_bos_token_id``, the tokenizer's ``src_lang``/``tgt_lang``,
    T5's ``task_specific_params``).
    """
    warnings = warnings if warnings is not None else []
    family = detect_family(model_type, tokenizer)
    lang = languages_of(languages)
    saved = saved if saved is not None and saved.family == family else None
    if getattr(tokenizer, "legacy_behaviour", False):
        raise FamilyError("the NLLB tokenizer is in legacy mode (legacy_behaviour=True: the language code after "
                          "the text); save it with legacy_behaviour=False")
    codes = language_codes(family, tokenizer)
    explicit_prefix = lang.get("source_prefix", "")
    # An explicit prefix (or 'none'), else the saved one, is final; only without both does the family default apply.
    decided = bool(explicit_prefix) or saved is not None
    prefix = "" if explicit_prefix == NO_PREFIX else explicit_prefix or (saved.source_prefix if saved else "")

    def pick(side: str) -> tuple[str, str]:
        """(the language as given, where it came from) for one side, explicit first."""
        for key in (f"{side}_lang_code", f"{side}_lang"):
            if lang.get(key):
                return lang[key], f"data.{key}"
        return "", ""

    if family in MULTILINGUAL:
        resolved = {}
        for side in ("source", "target"):
            value, where = pick(side)
            if value:
                resolved[side] = map_language(family, value, codes, side) \
                    if where.endswith("_lang") else _own_code(family, value, codes, where)
                continue
            if saved and getattr(saved, f"{side}_code"):
                resolved[side] = getattr(saved, f"{side}_code")
                continue
            column = _column_language(lang.get(f"{side}_column", ""), codes)
            if column:
                resolved[side] = map_language(family, column, codes, side,
                                              f"data.{side}_lang is not set, and data.{side}_column names")
                continue
            own = _model_default(family, side, tokenizer, generation_config, codes)
            if own:
                resolved[side] = own
                _warn(warnings, f"{family}: data.{side}_lang is not set and data.{side}_column "
                                f"{lang.get(f'{side}_column', '')!r} names no language; using the model's own "
                                f"{side} language {own!r}: set data.{side}_lang to be sure")
                continue
            raise FamilyError(f"{family}: the {side} language is unknown: set data.{side}_lang (an ISO 639-1 code, "
                              f"e.g. {'de' if side == 'source' else 'en'}) or data.{side}_lang_code (one of this "
                              f"model's codes: {', '.join(sorted(codes)[:6])}, ...)")
        return Translation(family, resolved["source"], resolved["target"], prefix)

    if family == "marian" and codes and not decided:
        # A multi-target Marian model reads the target language as a >>xx<< token before the source.
        value, where = pick("target")
        value = value or _column_language(lang.get("target_column", ""), codes)
        if not value:
            raise FamilyError(f"marian: this model translates into several languages ({', '.join(sorted(codes)[:6])}"
                              ", ...): set data.target_lang (or data.target_lang_code to one of those)")
        code = value.strip("<>") if value.strip("<>") in codes else map_language("marian", value, codes, "target")
        prefix = codes[code] + " "
    if family == "t5" and not decided:
        prefix = _t5_prefix(lang, task_specific_params, warnings)
    return Translation(family, source_prefix=prefix)


def _own_code(family: str, value: str, codes: dict[str, str], where: str) -> str:
    if value in codes:
        return value
    for code, token in codes.items():  # the token itself (M2M100's __de__) names the code too
        if token == value:
            return code
    raise FamilyError(f"{where}={value!r} is not one of this {family} model's codes "
                      f"({', '.join(sorted(codes)[:8])}, ...); use one of them, or set {where[:-5]} to an ISO code")


def _model_default(family: str, side: str, tokenizer, generation_config, codes: dict[str, str]) -> str:
    if side == "target":
        forced = (generation_config.get("forced_bos_token_id") if isinstance(generation_config, dict) else
                  getattr(generation_config, "forced_bos_token_id", None))
        if forced is not None:
            token = tokenizer.convert_ids_to_tokens(int(forced))
            for code, tok in codes.items():
                if tok == token:
                    return code
        own = getattr(tokenizer, "tgt_lang", None)
    else:
        own = getattr(tokenizer, "src_lang", None)
    return own if own in codes else ""


def _t5_prefix(lang: dict, task_specific_params: dict | None, warnings: list[str]) -> str:
    src = lang.get("source_lang") or _column_language(lang.get("source_column", ""), {})
    tgt = lang.get("target_lang") or _column_language(lang.get("target_column", ""), {})
    tasks = {k: v for k, v in (task_specific_params or {}).items() if k.startswith("translation_")}
    if src and tgt:
        s, t = _iso(src), _iso(tgt)
        known = tasks.get(f"translation_{s}_to_{t}") or {}
        if known.get("prefix"):
            return str(known["prefix"])
        if s in ISO and t in ISO:
            prefix = f"translate {ISO[s][1]} to {ISO[t][1]}: "
            if tasks:
                pretrained = ", ".join(k[len("translation_"):].replace("_to_", "→") for k in sorted(tasks))
                _warn(warnings, f"t5: the model's task_specific_params name no {s}→{t} task (it was trained on "
                                f"{pretrained}); using the prefix {prefix!r}: set data.source_prefix to choose another")
            return prefix
    _warn(warnings, "t5: no source prefix (data.source_prefix is empty and the languages are unknown); a T5 model "
                    "fine-tuned without one works, a pretrained one needs e.g. data.source_prefix='translate German "
                    "to English: ' (or data.source_lang/data.target_lang)")
    return ""


def _warn(warnings: list[str], message: str) -> None:
    if message not in warnings:
        log.warning("%s", message)
        warnings.append(message)


# -- a policy's translation: saved, attached, applied -----------------------------------------------

def read_saved(policy_dir: str) -> Translation | None:
    path = os.path.join(policy_dir, TRANSLATION_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise FamilyError(f"{path}: unreadable ({e}); delete it and run bootstrap again") from None
    return Translation.from_dict(raw, path)


def write_saved(policy_dir: str, translation: Translation) -> None:
    """Record the translation in ``policy_dir``; none for the plain family (its directories stay as they were)."""
    path = os.path.join(policy_dir, TRANSLATION_FILE)
    if translation == PLAIN:
        if os.path.exists(path):
            os.remove(path)
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(translation.to_dict(), f, indent=2, sort_keys=True)


def load_tokenizer(policy_dir: str, trust_remote_code: bool = False):
    """A policy directory's tokenizer, or a FamilyError saying how to save one that loads."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(policy_dir, trust_remote_code=trust_remote_code)
    except Exception as e:  # any loader error: the policy cannot tokenize, so it cannot run
        raise FamilyError(f"{policy_dir}: the tokenizer does not load ({type(e).__name__}: {str(e)[:200]}); save it "
                          "with tokenizer.save_pretrained() beside the model (transformers 5 writes tokenizer.json; "
                          "a directory with only a SentencePiece .model file needs a protobuf newer than kfp "
                          "allows to convert it)") from None


def resolve_dir(policy_dir: str, languages: Any = None, trust_remote_code: bool = False,
                warnings: list[str] | None = None, tokenizer=None) -> Translation:
    """:func:`resolve` for a policy directory, without loading its weights (validate, bootstrap)."""
    with open(os.path.join(policy_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    generation = {}
    gen_path = os.path.join(policy_dir, "generation_config.json")
    if os.path.exists(gen_path):
        with open(gen_path, encoding="utf-8") as f:
            generation = json.load(f)
    # Older checkpoints keep generation settings in config.json.
    generation = {"forced_bos_token_id": generation.get("forced_bos_token_id", config.get("forced_bos_token_id"))}
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(policy_dir, trust_remote_code)
    return resolve(config.get("model_type"), tokenizer, languages=languages, saved=read_saved(policy_dir),
                   generation_config=generation, task_specific_params=config.get("task_specific_params"),
                   warnings=warnings)


def record(policy_dir: str, languages: Any = None, trust_remote_code: bool = False,
           warnings: list[str] | None = None) -> Translation | None:
    """Resolve a seq2seq policy directory's translation once and write it there (bootstrap does this).

    None for a decoder-only policy (its prompt says what to do: ``rest.model.causal``).
    """
    from rest.model import causal  # imports torch; this module is read by the compile step, which needs none

    if causal.is_causal_dir(policy_dir):
        return None
    translation = resolve_dir(policy_dir, languages, trust_remote_code, warnings)
    write_saved(policy_dir, translation)
    log.info("translation: %s", describe(translation))
    return translation


def for_policy(model, tokenizer, policy_dir: str | None = None, languages: Any = None,
               warnings: list[str] | None = None) -> Translation:
    """Resolve the translation of a loaded policy (its saved record, ``languages``, its own config)."""
    config = model.config
    return resolve(getattr(config, "model_type", None), tokenizer, languages=languages,
                   saved=read_saved(policy_dir) if policy_dir else None,
                   generation_config=getattr(model, "generation_config", None),
                   task_specific_params=getattr(config, "task_specific_params", None), warnings=warnings)


def attach(model, tokenizer, translation: Translation) -> Translation:
    """Set the translation on a loaded policy: the tokenizer's languages, the forced first target token.

    The tokenizer carries it from here (:func:`of`), so every encode and generate call that
    gets this tokenizer translates the same way; ``save_pretrained`` then also writes the
    languages (tokenizer config) and ``forced_bos_token_id`` (generation config), so the
    directory translates right in plain Hugging Face code too.
    """
    if translation.source_code:
        tokenizer.src_lang = translation.source_code
    if translation.target_code:
        tokenizer.tgt_lang = translation.target_code
    tokenizer._rest_translation = translation
    if translation.multilingual and model is not None:
        model.generation_config.forced_bos_token_id = target_prefix_ids(tokenizer)[0]
    if model is not None:
        reset_zero_start(model)
    return translation


def _zero_start_row(model):
    """Marian's decoder starts from a zero vector: HF feeds it the <pad> row of the decoder embeddings
    (zero in a converted checkpoint), CTranslate2 a zero vector (``start_from_zero_embedding``).
    The row of a Marian model, else None."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "marian" or config.decoder_start_token_id is None:
        return None
    return model.get_decoder().embed_tokens.weight, int(config.decoder_start_token_id)


def reset_zero_start(model) -> bool:
    """Zero a Marian model's decoder-start row when fine-tuning moved it (True when it did).

    With tied output embeddings every NLL step also moves the <pad> row (through the pad
    logit), so a Marian checkpoint fine-tuned in plain HF code no longer starts from zero,
    as Marian (and CTranslate2's conversion of it) define the start.
    """
    found = _zero_start_row(model)
    if found is None:
        return False
    weight, row = found
    import torch

    with torch.no_grad():
        if not bool(weight[row].any()):
            return False
        log.warning("marian: the decoder-start (<pad>) embedding row is not zero (moved by earlier fine-tuning); "
                    "set to zero: Marian's decoder starts from a zero vector")
        weight[row].zero_()
    return True


def hold_zero_start(model) -> None:
    """Keep a Marian model's decoder-start row at zero while it trains (its gradient row is masked)."""
    found = _zero_start_row(model)
    if found is None or getattr(model, "_rest_zero_start_held", False):
        return
    weight, row = found

    def mask(grad):
        grad = grad.clone()
        grad[row] = 0
        return grad

    weight.register_hook(mask)
    model._rest_zero_start_held = True


def of(tokenizer) -> Translation:
    """The translation attached to ``tokenizer`` (:func:`attach`); for a bare one, what its class implies."""
    t = getattr(tokenizer, "_rest_translation", None)
    if t is not None:
        return t
    kind = tokenizer_kind(tokenizer)
    family = {"MarianTokenizer": "marian", "NllbTokenizer": "nllb", "M2M100Tokenizer": "m2m100",
              "MBart50Tokenizer": "mbart50", "T5Tokenizer": "t5", "MT5Tokenizer": "t5"}.get(kind, "plain")
    if family in MULTILINGUAL:
        return Translation(family, str(getattr(tokenizer, "src_lang", "") or ""),
                           str(getattr(tokenizer, "tgt_lang", "") or ""))
    return Translation(family)


# -- encoding and generation ---------------------------------------------------------------------

def encode_sources(tokenizer, texts: Sequence[str], **kwargs):
    """``tokenizer(texts)`` the family's way: the source prefix, and (set on the tokenizer) the source code."""
    prefix = of(tokenizer).source_prefix
    texts = [prefix + t for t in texts] if prefix else list(texts)
    return tokenizer(texts, **kwargs)


def encode_targets(tokenizer, texts: Sequence[str], **kwargs):
    """Targets with ``text_target``: Marian's target SentencePiece model, the target language code."""
    return tokenizer(text_target=list(texts), **kwargs)


def target_prefix_ids(tokenizer) -> list[int]:
    """The token ids the tokenizer puts before every target text (the target language code), [] if none.

    Training labels start with them, so generation must start with them too.
    """
    ids = list(tokenizer(text_target="", add_special_tokens=True)["input_ids"])
    while ids and ids[-1] == tokenizer.eos_token_id:
        ids.pop()
    return ids


def forced_ids(tokenizer) -> list[int]:
    """The tokens generation must start with (a multilingual family's target language code), [] if none.

    Generated sequences hold them (after the decoder's start token): callers drop them before
    decoding, since not every tokenizer marks a language code special (M2M100's ``__en__``).
    """
    translation = of(tokenizer)
    if not translation.multilingual:
        return []
    if not translation.target_code:  # a bare tokenizer would fall back to its source language
        raise FamilyError(f"{translation.family}: the target language is not set on this tokenizer; load the policy "
                          "with rest.model.policy.load_policy(path, languages=...) (or run bootstrap, which records it)")
    ids = target_prefix_ids(tokenizer)
    if len(ids) > 1:
        raise FamilyError(f"{of(tokenizer).family}: the tokenizer puts {len(ids)} tokens before a target "
                          f"({tokenizer.convert_ids_to_tokens(ids)}); one language code is expected")
    return ids


def generate_kwargs(tokenizer) -> dict:
    """Extra ``model.generate`` arguments: the target language as the forced first token."""
    ids = forced_ids(tokenizer)
    return {"forced_bos_token_id": ids[0]} if ids else {}


def target_prefix(tokenizer) -> list[str] | None:
    """CTranslate2's ``target_prefix`` for one source: the target language code's token, or None."""
    ids = forced_ids(tokenizer)
    return tokenizer.convert_ids_to_tokens(ids) if ids else None


def describe(translation: Translation) -> str:
    """One line for logs: what the project sets for this family."""
    parts = [translation.family]
    if translation.multilingual:
        parts.append(f"{translation.source_code}→{translation.target_code} (forced first target token)")
    if translation.source_prefix:
        parts.append(f"source prefix {translation.source_prefix!r}")
    return ", ".join(parts)
