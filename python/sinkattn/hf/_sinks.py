"""add_sinks: learnable per-head sink logits (and optional sliding windows) for models that were
built without them (Llama, Qwen2/3, Mistral, ...). The sinks are ordinary parameters of each
attention module, so they are trained, saved and loaded with the model's state dict."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

SINKS_PARAM = "sinkattn_sinks"  # parameter name on each attention module
WINDOW_ATTR = "sinkattn_window"  # plain attribute: W keys including the query, or None


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules in layer order: those with q/k/v projections and a layer index."""
    found = [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "layer_idx")]
    return sorted(found, key=lambda m: m.layer_idx)


def add_sinks(
    model: nn.Module,
    init: float = 0.0,
    window: int | None | Sequence[int | None] = None,
) -> nn.Module:
    """Give every attention layer of `model` a learnable sink logit per query head, initialised to
    `init` (a very negative value, e.g. -30, reproduces the original model), and optionally a
    sliding window (one int for all layers, or one entry per layer; an int replaces the layer's own
    window, None keeps the layer as the model built it: full attention for Llama).
    Switches the model to attn_implementation="sinkattn" (the only path that reads the sinks)
    and records the windows, if any, in `config.sinkattn_windows`. Returns the model."""
    from . import register

    register()
    layers = attention_modules(model)
    if not layers:
        raise ValueError("add_sinks: found no attention modules (with q_proj, k_proj and layer_idx) in the model")
    if isinstance(window, Sequence):
        windows = list(window)
        if len(windows) != len(layers):
            raise ValueError(f"add_sinks: window has {len(windows)} entries, the model has {len(layers)} attention layers")
    else:
        windows = [window] * len(layers)
    for w in windows:
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"add_sinks: a window must be an int >= 1 or None, got {w!r}")
    if isinstance(init, bool) or not isinstance(init, (int, float)) or not init < math.inf:
        raise ValueError(f"add_sinks: init must be a float below +inf (-inf: no sink), got {init!r}")

    for attn, w in zip(layers, windows):
        if isinstance(getattr(attn, "sinks", None), nn.Parameter):
            raise ValueError(f"add_sinks: {type(attn).__name__} already has learned sinks (`sinks`)")
        if hasattr(attn, SINKS_PARAM):
            raise ValueError(f"add_sinks: {type(attn).__name__} already has `{SINKS_PARAM}` "
                             "(add_sinks ran on this model before)")
        weight = attn.q_proj.weight
        heads = attn.q_proj.out_features // attn.head_dim
        attn.register_parameter(
            SINKS_PARAM, nn.Parameter(torch.full((heads,), float(init), dtype=weight.dtype, device=weight.device))
        )
        setattr(attn, WINDOW_ATTR, w)

    config = getattr(model, "config", None)
    if config is not None and any(w is not None for w in windows):
        config.sinkattn_windows = windows
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sinkattn")
    return model
