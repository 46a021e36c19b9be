"""transformers glue: make attn_implementation="sinkattn" run context-parallel.

    import sinkattn.hf, sinkattn.cp.hf as cphf
    cphf.enable_context_parallel(group, mode="allgather", layout="zigzag")
    # every rank feeds its shard of input_ids AND of the global position_ids (RoPE needs them):
    ids_l = sinkattn.cp.shard(input_ids, "zigzag", group=group)
    pos_l = sinkattn.cp.shard(position_ids, "zigzag", group=group)
    logits_l = model(input_ids=ids_l, position_ids=pos_l).logits

After enable_context_parallel the name "sinkattn" is re-registered with an attention function that
calls sinkattn.cp.attention on the shards transformers hands it; disable_context_parallel restores
the single-device function. Batches: fixed-length (no padding mask); packed documents of one row
(1, S), found from restarts of the global position_ids (contiguous layout; one all-gather of
position_ids per forward) or given as transformers' flash kwargs cu_seq_lens_q/k holding the
GLOBAL offsets (any layout). Padding masks are refused (pack instead). Sinks (s_aux, or the parameter add_sinks adds) and sliding windows follow the
single-device function. Gradients of parameters replicated over the group (sinks included) are
per-rank partials: sum them over the group.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import api
from .layout import _fail, unshard

_state: dict = {}
_packing: dict = {}  # the last position_ids tensor seen, its version and its global offsets


def _packed_cu(position_ids: torch.Tensor, layout: str, group):
    """Global document offsets of a packed batch (1, S_local) of position_ids shards, or None
    when it holds one sequence. One all-gather per forward: layers reuse the result while they
    see the same, unmodified tensor."""
    if _packing.get("tensor") is position_ids and _packing.get("version") == position_ids._version:
        return _packing["cu"]
    pos = unshard(position_ids, layout, dim=1, group=group).reshape(-1)
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[1:] = pos[1:] != pos[:-1] + 1
    first = starts.nonzero().flatten().tolist()
    cu = None if len(first) <= 1 else first + [pos.numel()]
    if cu is not None and layout == "zigzag":
        _fail("position_ids", "restart inside the sequence (packed documents): with the zigzag "
              "layout pass the global offsets as cu_seq_lens_q/k, since the shards cannot be "
              "put back in order without them")
    _packing.update(tensor=position_ids, version=position_ids._version, cu=cu)
    return cu


def _cp_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                          scaling: Optional[float] = None, sliding_window: Optional[int] = None,
                          softcap=None, is_causal=None, s_aux=None, position_ids=None,
                          cu_seq_lens_q=None, cu_seq_lens_k=None, **kwargs):
    from ..hf._attention import _window_arg

    if dropout and dropout > 0:
        _fail("dropout", f"got {dropout}; set config.attention_dropout = 0.0")
    if softcap is not None:
        _fail("softcap", f"got {softcap}; logit softcapping is not supported")
    if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
        _fail("attention_mask", "padding is not supported with context parallelism; pack the "
              "documents and pass cu_seq_lens_q/k (global offsets) instead")
    sinks = s_aux if s_aux is not None else getattr(module, "sinkattn_sinks", None)
    added = getattr(module, "sinkattn_window", None)
    window = added if added is not None else sliding_window
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    mode = _state["window_mode"] if window and _state["window_mode"] else _state["mode"]
    opts = dict(group=_state["group"], mode=mode, layout=_state["layout"],
                heads_k_stride=_state["heads_k_stride"], causal=causal,
                window=_window_arg(window, causal), scale=scaling)
    if cu_seq_lens_q is None and position_ids is not None and q.shape[0] == 1:
        cu_seq_lens_q = _packed_cu(position_ids, _state["layout"], _state["group"])
    if cu_seq_lens_q is not None:
        if q.shape[0] != 1:
            _fail("cu_seq_lens_q", f"packed documents need batch 1, got batch {q.shape[0]}")
        if cu_seq_lens_k is not None and not torch.equal(torch.as_tensor(cu_seq_lens_k),
                                                         torch.as_tensor(cu_seq_lens_q)):
            _fail("cu_seq_lens_k", "expected the same offsets as cu_seq_lens_q (self-attention)")
        out = api.attention(q[0], k[0], v[0], sinks, cu_seqlens=cu_seq_lens_q, **opts)
        return out.unsqueeze(0), None
    return api.attention(q, k, v, sinks, **opts), None


def enable_context_parallel(group=None, mode: str = "allgather", layout: str = "contiguous",
                            heads_k_stride: Optional[int] = None,
                            window_mode: Optional[str] = None) -> None:
    """Re-registers attn_implementation="sinkattn" so that every layer runs sinkattn.cp.attention
    over `group` (modes and layouts as there). window_mode: another mode for the sliding-window
    layers (e.g. 'halo' beside 'allgather' for GPT-OSS's alternating layers); None = `mode`.
    Models already built pick it up at their next forward (transformers looks the function up by
    name at every call)."""
    from transformers import AttentionInterface

    from .. import hf

    for name, m in (("mode", mode), ("window_mode", window_mode)):
        if m is not None and m not in api.MODES:
            _fail(name, f"got {m!r}, expected one of {', '.join(map(repr, api.MODES))}")
    _state.update(group=group, mode=mode, layout=layout, heads_k_stride=heads_k_stride,
                  window_mode=window_mode)
    AttentionInterface.register(hf.NAME, _cp_attention_forward)


def disable_context_parallel() -> None:
    """Back to the single-device attention function."""
    from .. import hf

    _state.clear()
    hf.register()


def sinks_for_local_heads(sinks: torch.Tensor, local_heads: int, group=None) -> torch.Tensor:
    """The sink logits of this rank's heads when a framework shards heads itself (VERL's Ulysses
    sequence parallel runs the attention function on heads [r * h, (r + 1) * h), h = Hq / W, with
    the module's full (Hq,) sinks): slicing keeps each head's sink with its head, and the
    gradient of the slice lands in the right entries of the full parameter."""
    import torch.distributed as dist

    if sinks.shape[0] == local_heads:
        return sinks
    world = dist.get_world_size(group)
    if sinks.shape[0] != local_heads * world:
        _fail("sinks", f"got {sinks.shape[0]} sinks for {local_heads} local heads on {world} ranks")
    r = dist.get_rank(group)
    return sinks[r * local_heads:(r + 1) * local_heads]
