"""Model configs built in code (no downloads): the demo's default model, the GPU benchmark's
GPT-OSS-20B-shaped block, and the tiny random models the tests use."""

from __future__ import annotations

from transformers import AutoConfig


def gpt_oss_config(
    layers: int = 2,
    hidden: int = 2880,
    heads: int = 64,
    kv_heads: int = 8,
    head_dim: int = 64,
    window: int = 128,
    experts: int = 32,
    experts_per_token: int = 4,
    intermediate: int | None = None,
    vocab: int = 201088,
    max_positions: int = 131072,
):
    """A GPT-OSS config; the defaults are gpt-oss-20b's attention widths (hidden 2880, 64 query
    heads, 8 kv heads, head dim 64, learned sinks, sliding window 128 on every other layer)."""
    return AutoConfig.for_model(
        "gpt_oss",
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        sliding_window=window,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        num_local_experts=experts,
        num_experts_per_tok=experts_per_token,
        max_position_embeddings=max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": 150000.0},
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )


def tiny_config(family: str, window: int | None = 4):
    """A tiny random model of `family` (gpt_oss, llama, qwen2, qwen3, mistral): 2 layers, hidden 64,
    4 query heads over 2 kv heads of dim 32 (GQA), vocab 128. `window` is the sliding window of the
    families that have one (GPT-OSS and Qwen: every other layer; Mistral: every layer)."""
    if family == "gpt_oss":
        return gpt_oss_config(
            layers=2, hidden=64, heads=4, kv_heads=2, head_dim=32, window=window, experts=4,
            experts_per_token=2, vocab=128, max_positions=1024,
        )
    common = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, attention_dropout=0.0,
        tie_word_embeddings=False,
    )
    if family == "mistral":
        common["sliding_window"] = window
    elif family in ("qwen2", "qwen3"):
        common.update(use_sliding_window=window is not None, sliding_window=window, max_window_layers=1)
    elif family != "llama":
        raise ValueError(f"tiny_config: unknown family {family!r}")
    return AutoConfig.for_model(family, **common)
