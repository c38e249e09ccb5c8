"""Real models' shapes: the hidden sizes of widely used open models x token counts of serving batches.

Each hidden size is the ``hidden_size`` of the model's ``config.json`` on the Hugging Face Hub
(the repository named in ``source``); ``qk_head_dim`` is ``head_dim`` there for the models that
normalize q and k per head (QK-norm: Qwen3, Gemma 3), 0 for the others. Gemma's norms scale by
(1 + w) (``variant="gemma"`` measures that form); DeepSeek-V3 also normalizes its compressed q and kv
(``q_lora_rank`` 1536, ``kv_lora_rank`` 512), which ``hidden_size`` does not cover.

Token counts are decode (1, 3), mixed (17, 100, 333, 777) and prefill (1500 .. 40000) batches,
not only powers of two. They are split, once and for all, into shapes a tuner may see (``tune``)
and shapes it never sees (``validate``, used only to judge a launch policy): the split is by
token count, alternating along the sorted list, so each side has decode, mixed and prefill
batches; every hidden size appears in both.

``shapes(models, split)`` gives the (hidden sizes, token counts) of a selection;
``SweepConfig(models=..., models_split=...)`` and ``python -m rmsnorm_lab run --models ...`` use it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    name: str
    family: str
    hidden: int                   # config.json hidden_size
    qk_head_dim: int = 0          # config.json head_dim where q and k are normalized per head (QK-norm), else 0
    source: str = ""              # the Hub repository whose config.json gives the sizes


def _m(name, family, hidden, source, qk_head_dim=0):
    return Model(name, family, hidden, qk_head_dim, source)


MODELS: tuple[Model, ...] = (
    _m("Llama-3.1-8B", "Llama 3", 4096, "meta-llama/Llama-3.1-8B"),
    _m("Llama-3.1-70B", "Llama 3", 8192, "meta-llama/Llama-3.1-70B"),
    _m("Llama-3.1-405B", "Llama 3", 16384, "meta-llama/Llama-3.1-405B"),
    _m("Qwen2.5-0.5B", "Qwen2.5", 896, "Qwen/Qwen2.5-0.5B"),
    _m("Qwen2.5-1.5B", "Qwen2.5", 1536, "Qwen/Qwen2.5-1.5B"),
    _m("Qwen2.5-3B", "Qwen2.5", 2048, "Qwen/Qwen2.5-3B"),
    _m("Qwen2.5-7B", "Qwen2.5", 3584, "Qwen/Qwen2.5-7B"),
    _m("Qwen2.5-14B", "Qwen2.5", 5120, "Qwen/Qwen2.5-14B"),
    _m("Qwen2.5-32B", "Qwen2.5", 5120, "Qwen/Qwen2.5-32B"),
    _m("Qwen2.5-72B", "Qwen2.5", 8192, "Qwen/Qwen2.5-72B"),
    _m("Qwen3-0.6B", "Qwen3", 1024, "Qwen/Qwen3-0.6B", 128),
    _m("Qwen3-1.7B", "Qwen3", 2048, "Qwen/Qwen3-1.7B", 128),
    _m("Qwen3-4B", "Qwen3", 2560, "Qwen/Qwen3-4B", 128),
    _m("Qwen3-8B", "Qwen3", 4096, "Qwen/Qwen3-8B", 128),
    _m("Qwen3-14B", "Qwen3", 5120, "Qwen/Qwen3-14B", 128),
    _m("Qwen3-32B", "Qwen3", 5120, "Qwen/Qwen3-32B", 128),
    _m("DeepSeek-V3", "DeepSeek-V3", 7168, "deepseek-ai/DeepSeek-V3"),
    _m("Gemma-2-2B", "Gemma 2", 2304, "google/gemma-2-2b"),
    _m("Gemma-2-9B", "Gemma 2", 3584, "google/gemma-2-9b"),
    _m("Gemma-2-27B", "Gemma 2", 4608, "google/gemma-2-27b"),
    _m("Gemma-3-1B", "Gemma 3", 1152, "google/gemma-3-1b-pt", 256),
    _m("Gemma-3-4B", "Gemma 3", 2560, "google/gemma-3-4b-pt (text_config)", 256),
    _m("Gemma-3-12B", "Gemma 3", 3840, "google/gemma-3-12b-pt (text_config)", 256),
    _m("Gemma-3-27B", "Gemma 3", 5376, "google/gemma-3-27b-pt (text_config)", 128),
    _m("Mistral-7B", "Mistral", 4096, "mistralai/Mistral-7B-v0.1"),
    _m("Mixtral-8x7B", "Mixtral", 4096, "mistralai/Mixtral-8x7B-v0.1"),
    _m("Mixtral-8x22B", "Mixtral", 6144, "mistralai/Mixtral-8x22B-v0.1"),
    _m("gpt-oss-20b", "gpt-oss", 2880, "openai/gpt-oss-20b"),
    _m("gpt-oss-120b", "gpt-oss", 2880, "openai/gpt-oss-120b"),
    _m("Phi-3-mini", "Phi", 3072, "microsoft/Phi-3-mini-4k-instruct"),
    _m("Phi-4", "Phi", 5120, "microsoft/phi-4"),
)

TOKENS = (1, 3, 17, 100, 333, 777, 1500, 5000, 12345, 40000)
SPLIT_TOKENS = {
    "tune": (1, 17, 333, 1500, 12345),          # TOKENS[0::2]: what a tuner may see
    "validate": (3, 100, 777, 5000, 40000),     # TOKENS[1::2]: never tuned on; judges a launch policy
    "all": TOKENS,
}
SPLITS = tuple(SPLIT_TOKENS)


def by_name() -> dict[str, Model]:
    return {m.name: m for m in MODELS}


def check_models(value, name: str = "models") -> list[str]:
    """Model names (canonical spelling, table order) from 'all', ['all'] or a list of names (any case).

    ValueError naming ``name`` for an unknown model, with the closest names; TypeError for a non-list.
    """
    from .validate import suggest

    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name}: expected 'all' or a list of model names, got {value!r}")
    if not value:
        raise ValueError(f"{name}: expected 'all' or at least one model name, got an empty list")
    if [v.lower() for v in value] == ["all"]:
        return [m.name for m in MODELS]
    lower = {m.name.lower(): m.name for m in MODELS}
    chosen = set()
    for v in value:
        if v.lower() not in lower:
            raise ValueError(f"{name}: unknown model {v!r} (`python -m rmsnorm_lab list --models` lists them)"
                             f"{suggest(v, list(by_name()))}")
        chosen.add(lower[v.lower()])
    return [m.name for m in MODELS if m.name in chosen]


def check_split(value, name: str = "models_split") -> str:
    from .validate import suggest

    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {', '.join(SPLITS)}, got {value!r}")
    if value not in SPLIT_TOKENS:
        raise ValueError(f"{name}: expected one of {', '.join(SPLITS)}, got {value!r}{suggest(value, SPLITS)}")
    return value


def shapes(models="all", split: str = "validate") -> tuple[list[int], list[int]]:
    """(hidden sizes, token counts) of the chosen models in one split; the shapes are their product."""
    names = set(check_models(models))
    hidden = sorted({m.hidden for m in MODELS if m.name in names})
    return hidden, list(SPLIT_TOKENS[check_split(split)])


def names_by_hidden(models="all") -> dict[int, str]:
    """{hidden size: "Name, Name"}: which of the chosen models have each hidden size."""
    names = set(check_models(models))
    out: dict[int, list[str]] = {}
    for m in MODELS:
        if m.name in names:
            out.setdefault(m.hidden, []).append(m.name)
    return {h: ", ".join(v) for h, v in out.items()}


def table_lines() -> list[str]:
    """The table as text: one model a line, then the token counts of each split."""
    lines = [f"{'model':16s} {'family':12s} {'hidden':>6s} {'qk-norm':>7s}  source (config.json)"]
    for m in MODELS:
        lines.append(f"{m.name:16s} {m.family:12s} {m.hidden:6d} {m.qk_head_dim or '-':>7}  {m.source}")
    for s in ("tune", "validate"):
        lines.append(f"tokens ({s}): {' '.join(map(str, SPLIT_TOKENS[s]))}")
    return lines
