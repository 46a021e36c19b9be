"""The public differentiable entry points: sinkattn.attention and sinkattn.varlen_attention."""

from __future__ import annotations

from . import ops
from ._checks import _fail


def attention(q, k, v, sinks=None, *, causal=True, window=None, scale=None, return_lse=False,
              deterministic=False):
    """Exact attention with optional learned sinks, sliding window and GQA.

    Args:
        q: (B, Sq, Hq, D); k, v: (B, Sk, Hkv, D); same dtype (float32, float16, bfloat16; CUDA:
            float16, bfloat16) and device; Hq % Hkv == 0; D up to 256: the kernels are built
            for 32, 64, 96, 128 and 256, and other head dims run zero-padded to the next of
            these (exact; the padded FLOPs plus copies of the tensors). Any strides
            (e.g. ``x.transpose(1, 2)`` of a (B, H, S, D) tensor) are read in place when the head
            dim is contiguous (on CUDA also 16-byte aligned); other layouts are copied first.
            Any batch size: on CUDA more than 65,535 sequences run as one library call per
            65,535 (a launch's grid limit).
        sinks: None or (Hq,) raw sink logits of any float dtype; their gradient has their dtype.
        causal: mask keys after the query's position. With Sq != Sk the diagonal is aligned
            bottom-right: query i sits at key position i + Sk - Sq.
        window: None (no limit), an int W >= 1 (W keys including the query itself, the
            transformers ``sliding_window`` meaning: left = W - 1; when causal=False the band is
            symmetric, right = W - 1 too), or a (left, right) tuple of keys before / after the
            aligned position (None or -1 = unbounded; right must be 0 or None when causal).
            transformers' bidirectional sliding window (|i - j| <= W) is window=(W, W),
            causal=False.
        scale: softmax scale on q.k (default 1/sqrt(D)); finite and > 0.
        return_lse: also return lse, fp32 (B, Hq, Sq): log of the whole softmax denominator, sink
            included. Gradients flow through it too.
        deterministic: bit-identical gradients run to run (may be slower).

    Returns:
        out (B, Sq, Hq, D) contiguous, in q's dtype; or (out, lse) when return_lse.
    """
    sinks, _, _, scale, left, right = ops.resolve(q, sinks, causal, window, scale, deterministic)
    out, lse = ops.run_fwd(q, k, v, sinks, None, None, -1, -1, scale, left, right, causal,
                           deterministic, return_lse)
    return (out, lse) if return_lse else out


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                     sinks=None, *, causal=True, window=None, scale=None, return_lse=False,
                     deterministic=False):
    """Attention over packed variable-length sequences.

    q: (Tq, Hq, D), k, v: (Tk, Hkv, D); sequence b holds rows [cu_seqlens_q[b], cu_seqlens_q[b+1])
    of q and [cu_seqlens_k[b], cu_seqlens_k[b+1]) of k and v. cu_seqlens_q/k: int32 (N + 1,) on
    q's device, non-decreasing (zero-length sequences are fine). max_seqlen_q/k: the longest
    sequence, or None to compute it from cu_seqlens — a host read, i.e. a device synchronisation
    for CUDA tensors on every forward and backward; pass them to avoid it (torch.compile works
    either way: the read happens inside the op). On CUDA, passed values are checked against the
    offsets on the device after the call's kernels: where a sequence is longer than its max,
    the offsets decrease or run past q's / k's rows, every output (out, lse, and the backward's
    gradients) is NaN, and the next sinkattn call on CUDA raises the ValueError naming the
    offset (:func:`check_deferred_error` asks for it without a call; a CUDA graph's replays make
    no call, so ask after them). On the CPU the offsets are checked before the call. Rows of q
    beyond cu_seqlens_q[-1] get out = 0, lse = -inf and no gradient. Any number of sequences: on
    CUDA more than 65,535 (a launch's grid limit) run as one library call per 65,535. Other
    arguments as in :func:`attention`; lse is (Hq, Tq).
    """
    sinks, max_q, max_k, scale, left, right = ops.resolve(q, sinks, causal, window, scale,
                                                          deterministic, max_seqlen_q, max_seqlen_k)
    if cu_seqlens_q is None or cu_seqlens_k is None:
        name = "cu_seqlens_q" if cu_seqlens_q is None else "cu_seqlens_k"
        _fail(name, "got None, expected an int32 tensor of sequence offsets", TypeError)
    out, lse = ops.run_fwd(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale, left,
                           right, causal, deterministic, return_lse)
    return (out, lse) if return_lse else out


def kernels(q, k, v, sinks=None, *, causal=True, window=None, scale=None, deterministic=False,
            cu_seqlens_q=None, cu_seqlens_k=None):
    """Which kernels :func:`attention` (or, with cu_seqlens, :func:`varlen_attention`) would run
    for these arguments, and why not a faster one: ``{"fwd": ..., "bwd": ...}``, e.g.
    ``"cuda sm90 (wgmma, TMA)"``, ``"cuda sm90 band (...)"`` (head dim 64, query groups of 8k
    heads: narrow windows, and causal sequences of up to 129 keys; forward; the backward then
    says ``"... dq by the band kernel ..."``),
    ``"cuda sm80 (portable; sm90 not used: <reason>)"``, ``"cuda packed group (...)"``
    (decode-sized queries, forward) or ``"cpu"``. Runs nothing; raises as the call itself would
    on arguments it refuses."""
    sinks, max_q, max_k, scale, left, right = ops.resolve(q, sinks, causal, window, scale,
                                                          deterministic)
    return ops.kernels(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale, left, right,
                       causal, deterministic)
