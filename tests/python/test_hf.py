"""attn_implementation="sinkattn" in transformers, on tiny random models built from configs (CPU,
fp32, no downloads): parity with eager / sdpa for logits and every gradient, packed and padded
batches, KV-cache generation, add_sinks, refusals, and the no-S x S / no-K/V-copy contract."""

import copy
import logging
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AttentionInterface, AutoModelForCausalLM
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

import sinkattn.hf
from sinkattn.hf import _attention
from sinkattn.hf.configs import tiny_config

VOCAB = 128


def build(family, impl, window=4, seed=0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(family, window)
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl, dtype=torch.float32)
    if family == "gpt_oss":  # the default init (std 0.02) would leave the sinks nearly irrelevant
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.normal_(0.0, 1.0)
    return model


def twin(model, impl):
    other = copy.deepcopy(model)
    other.set_attn_implementation(impl)
    return other


def assert_grads_match(ours, ref):
    checked = 0
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        if q.grad is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{name}: {m}")
        checked += 1
    assert checked > 0


def tokens(batch, length, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_registration_is_idempotent_and_named_safely():
    sinkattn.hf.register()
    sinkattn.hf.register()
    assert "flash" not in sinkattn.hf.NAME
    assert AttentionInterface._global_mapping["sinkattn"] is sinkattn.hf.sinkattn_attention_forward
    assert AttentionMaskInterface._global_mapping["sinkattn"] is flash_attention_mask


@pytest.mark.parametrize("head_dim", [32, 48])  # 48: one the kernels lack, run padded to 64
def test_gpt_oss_logits_and_all_gradients_match_eager(head_dim):
    eager = build("gpt_oss", "eager", head_dim=head_dim)
    ours = twin(eager, "sinkattn")
    assert ours.model.layers[0].self_attn.q_proj.out_features == 4 * head_dim
    ids = tokens(2, 24)  # longer than the window (4) of the sliding layer
    out_ref, out = eager(ids, labels=ids), ours(ids, labels=ids)
    torch.testing.assert_close(out.logits, out_ref.logits)
    out_ref.loss.backward()
    out.loss.backward()
    assert_grads_match(ours, eager)
    assert ours.model.layers[0].self_attn.sinks.grad.abs().min() > 0  # sinks are learned


@pytest.mark.parametrize("head_dim,tail", [(32, ""), (80, ", head_dim 80 padded to 96")])
def test_log_line_once(caplog, head_dim, tail):
    model = build("gpt_oss", "sinkattn", head_dim=head_dim)
    _attention._logged = False
    with caplog.at_level(logging.INFO, logger="sinkattn"):
        model(tokens(1, 8))
        model(tokens(1, 8))
    lines = [r.getMessage() for r in caplog.records if r.name == "sinkattn"]
    assert lines == ["[sinkattn] cpu fp32: learned sinks, window 4 / full" + tail]


@pytest.mark.parametrize("how", ["position_ids", "cu_seq_lens"])
def test_packed_batch_equals_each_sequence_alone(how):
    eager = build("gpt_oss", "eager")
    ours = twin(eager, "sinkattn")
    lengths = [5, 9, 7]
    seqs = [tokens(1, n, seed=10 + i) for i, n in enumerate(lengths)]
    packed = torch.cat(seqs, 1)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    kwargs = {}
    if how == "cu_seq_lens":  # what DataCollatorWithFlattening(return_flash_attn_kwargs=True) adds
        cu = torch.tensor([0, 5, 14, 21], dtype=torch.int32)
        kwargs = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=9, max_length_k=9)
    logits = ours(packed, position_ids=position_ids, **kwargs).logits
    # Per-token loss summed over all sequences: the packed gradient must equal the sum of the
    # gradients of each sequence run alone (through eager).
    torch.nn.functional.cross_entropy(logits[0], packed[0], reduction="sum").backward()
    start = 0
    for seq, n in zip(seqs, lengths):
        alone = eager(seq).logits
        torch.testing.assert_close(logits[:, start : start + n], alone)
        torch.testing.assert_close(logits[:, start : start + n], ours(seq).logits)
        torch.nn.functional.cross_entropy(alone[0], seq[0], reduction="sum").backward()
        start += n
    assert_grads_match(ours, eager)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_eager_at_real_positions(side):
    eager = build("gpt_oss", "eager")
    ours = twin(eager, "sinkattn")
    ids = tokens(3, 16)
    mask = torch.ones(3, 16, dtype=torch.long)
    for row, pad in enumerate([0, 3, 9]):
        if side == "left":
            mask[row, :pad] = 0
        else:
            mask[row, 16 - pad :] = 0
    labels = ids.masked_fill(mask == 0, -100)
    out_ref = eager(ids, attention_mask=mask, labels=labels)
    out = ours(ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], out_ref.logits[real])
    out_ref.loss.backward()
    out.loss.backward()
    assert_grads_match(ours, eager)


def test_padding_with_holes_matches_eager_without_windows_and_is_refused_with_them():
    """A mask with zeros between real tokens packs like flash_attention_2: exact for full
    attention (the causal order holds), but a sliding window would count real tokens instead of
    positions, so a windowed layer refuses it rather than differ from eager."""
    ids = tokens(2, 12)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 5:7] = 0  # a hole in row 1
    mask[0, :2] = 0  # left padding in row 0: one run, fine
    eager = build("llama", "eager")
    ours = twin(eager, "sinkattn")
    real = mask.bool()
    torch.testing.assert_close(ours(ids, attention_mask=mask).logits[real],
                               eager(ids, attention_mask=mask).logits[real])
    windowed = build("gpt_oss", "sinkattn")
    with pytest.raises(ValueError, match="attention_mask: row 1 has padding between real tokens"):
        windowed(ids, attention_mask=mask)
    windowed(ids, attention_mask=torch.ones_like(mask))  # the cached plan is per mask tensor


@pytest.mark.parametrize("trial", range(8))
def test_random_padded_batch_matches_eager(trial):
    """Random batch, length, window, padding side and amounts (fresh every run: conftest seeds
    torch per test), with and without sinks: logits at real positions and every gradient. The
    labels never ask a padding position to predict a token: its attention output is undefined
    (0 here, as with flash_attention_2; without sinks eager gives the mean of masked values)."""
    pick = lambda options: options[int(torch.randint(len(options), ()))]  # noqa: E731
    family, window = pick(["gpt_oss", "mistral"]), pick([1, 2, 3, 8, 100])
    batch, length, side = int(torch.randint(1, 5, ())), int(torch.randint(1, 25, ())), pick("lr")
    eager = build(family, "eager", window=window, seed=trial)
    ours = twin(eager, "sinkattn")
    ids = tokens(batch, length, seed=trial)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        pad = int(torch.randint(length, ())) if torch.rand(()) < 0.6 else 0
        if side == "l":
            mask[row, :pad] = 0
        else:
            mask[row, length - pad :] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
    what = f"{family} window {window} padding {side} {mask.tolist()}"
    out_ref = eager(ids, attention_mask=mask, labels=labels)
    out = ours(ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], out_ref.logits[real], msg=lambda m: f"{what}: {m}")
    if torch.isfinite(out_ref.loss):  # some label left
        out_ref.loss.backward()
        out.loss.backward()
        assert_grads_match(ours, eager)


@pytest.mark.parametrize("family", ["gpt_oss", "mistral"])
def test_greedy_generate_matches_eager(family):
    eager = build(family, "eager").eval()
    ours = twin(eager, "sinkattn")
    ids = tokens(2, 7)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as generate() expects
    kwargs = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    ref = eager.generate(ids, **kwargs)  # 12 new tokens run well past the window of 4
    assert torch.equal(ours.generate(ids, **kwargs), ref)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
def test_model_without_sinks_matches_sdpa(family):
    sdpa = build(family, "sdpa")
    ours = twin(sdpa, "sinkattn")
    ids = tokens(2, 24)
    out_ref, out = sdpa(ids, labels=ids), ours(ids, labels=ids)
    torch.testing.assert_close(out.logits, out_ref.logits)
    out_ref.loss.backward()
    out.loss.backward()
    assert_grads_match(ours, sdpa)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    real = mask.bool()
    torch.testing.assert_close(ours(ids, attention_mask=mask).logits[real], sdpa(ids, attention_mask=mask).logits[real])


def reference_sink_attention(module, query, key, value, attention_mask, scaling=None, sliding_window=None, **_):
    """Independent fp64 reference for add_sinks models (eager style: repeat K/V, full score matrix,
    a sink column in the softmax, then dropped); the mask is the 2D padding mask or None."""
    groups = query.shape[1] // key.shape[1]
    k = key.double().repeat_interleave(groups, 1)
    v = value.double().repeat_interleave(groups, 1)
    scores = query.double() @ k.transpose(-1, -2) * scaling
    sq, sk = scores.shape[-2:]
    pos = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk)[None]
    window = getattr(module, "sinkattn_window", None)
    visible = (j <= pos) & ((j > pos - window) if window else True)
    if attention_mask is not None:
        visible = visible & attention_mask[:, None, None, -sk:].bool()
    scores = scores.masked_fill(~visible, float("-inf"))
    sink = module.sinkattn_sinks.double()[None, :, None, None].expand(*scores.shape[:-1], 1)
    probs = torch.softmax(torch.cat([scores, sink], -1), -1)[..., :-1]
    return (probs @ v).to(query.dtype).transpose(1, 2), None


AttentionInterface.register("reference_sinks", reference_sink_attention)
AttentionMaskInterface.register("reference_sinks", flash_attention_mask)


def test_add_sinks_with_very_negative_init_reproduces_the_model():
    original = build("llama", "sdpa")
    ours = sinkattn.hf.add_sinks(copy.deepcopy(original), init=-30.0)
    assert ours.config._attn_implementation == "sinkattn"
    ids = tokens(2, 24)
    torch.testing.assert_close(ours(ids).logits, original(ids).logits)
    # Saved and loaded with the state dict.
    state = ours.state_dict()
    assert "model.layers.1.self_attn.sinkattn_sinks" in state
    fresh = sinkattn.hf.add_sinks(build("llama", "sdpa", seed=5), init=0.0)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh(ids).logits, ours(ids).logits)


def test_add_sinks_matches_reference_and_trains():
    model = sinkattn.hf.add_sinks(build("qwen3", "sdpa", window=None), init=0.0, window=[4, None])
    # The reference reads the windows add_sinks records: check them against the argument first.
    assert [layer.self_attn.sinkattn_window for layer in model.model.layers] == [4, None]
    assert model.config.sinkattn_windows == [4, None]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinkattn_sinks.normal_(0.0, 1.0)
    ref = twin(model, "reference_sinks")
    ids = tokens(2, 20)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    labels = ids.masked_fill(mask == 0, -100)
    out, out_ref = model(ids, attention_mask=mask, labels=labels), ref(ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], out_ref.logits[real])
    out.loss.backward()
    out_ref.loss.backward()
    assert_grads_match(model, ref)

    sinks_before = model.model.layers[0].self_attn.sinkattn_sinks.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(model.model.layers[0].self_attn.sinkattn_sinks, sinks_before)


def test_add_sinks_one_window_for_every_layer():
    model = sinkattn.hf.add_sinks(build("llama", "sdpa"), window=3)
    layers = model.model.layers
    assert len(layers) > 1 and [layer.self_attn.sinkattn_window for layer in layers] == [3] * len(layers)


def test_add_sinks_refuses_bad_arguments():
    with pytest.raises(ValueError, match="already has learned sinks"):
        sinkattn.hf.add_sinks(build("gpt_oss", "eager"))
    with pytest.raises(ValueError, match="window has 3 entries"):
        sinkattn.hf.add_sinks(build("llama", "sdpa"), window=[4, 4, 4])
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        sinkattn.hf.add_sinks(build("llama", "sdpa"), window=0)
    for init in (math.nan, math.inf, "0"):
        with pytest.raises(ValueError, match="init must be a float below"):
            sinkattn.hf.add_sinks(build("llama", "sdpa"), init=init)
    with pytest.raises(ValueError, match="add_sinks ran on this model before"):
        sinkattn.hf.add_sinks(sinkattn.hf.add_sinks(build("llama", "sdpa")))


def test_training_with_attention_dropout_is_refused():
    model = build("gpt_oss", "sinkattn", attention_dropout=0.1).train()
    with pytest.raises(ValueError, match="dropout 0.1 is not supported"):
        model(tokens(1, 8))
    model.eval()(tokens(1, 8))  # inference passes dropout=0.0: fine


class _Shapes(TorchDispatchMode):
    """Records the size of every tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.sizes.append((t.numel(), str(func)))
        return out


class _Layer(torch.nn.Module):
    """What the attention functions read from an attention layer (GPT-OSS's eager one included)."""

    def __init__(self, hq=4, hkv=2, causal=True):
        super().__init__()
        self.num_key_value_groups = hq // hkv
        self.sinks = torch.nn.Parameter(torch.randn(hq))
        if causal is not None:  # None: a layer without the attribute
            self.is_causal = causal


@pytest.mark.parametrize("padded", [False, True])
def test_no_square_scores_and_no_kv_repetition(padded):
    d = 32
    module = _Layer()  # its sinks are GPT-OSS's, which sinkattn reads only as s_aux
    # Prefill, Sq = Sk = 512, one head: any S x S tensor would hold 262144 elements.
    q, k, v = (torch.randn(1, 1, 512, d, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, 512, dtype=torch.bool)
    if padded:
        mask[0, :7] = False
    with _Shapes() as rec:
        out, _ = _attention.sinkattn_attention_forward(module, q, k, v, mask if padded else None, scaling=d**-0.5)
        out.sum().backward()
    assert max(rec.sizes)[0] < 512 * 512, max(rec.sizes)
    # Decode, 16 query heads over 1 kv head, Sk = 512: a repeated K or V would hold 16 * 512 * d.
    q = torch.randn(1, 16, 1, d, requires_grad=True)
    k, v = (torch.randn(1, 1, 512, d, requires_grad=True) for _ in range(2))
    with _Shapes() as rec:
        out, _ = _attention.sinkattn_attention_forward(module, q, k, v, mask if padded else None, scaling=d**-0.5)
        out.sum().backward()
    assert max(rec.sizes)[0] < 16 * 512 * d, max(rec.sizes)


def test_autocast_runs_the_kernel_in_the_autocast_dtype(monkeypatch):
    """fp32 weights under bf16 autocast (how FSDP trainers such as VERL run): RoPE hands the
    attention fp32 q/k, which must reach the kernel in bf16, as transformers' flash path does."""
    eager = build("gpt_oss", "eager")
    ours = twin(eager, "sinkattn")
    seen = []
    kernel = sinkattn.attention
    monkeypatch.setattr(sinkattn, "attention", lambda q, *a, **k: seen.append(q.dtype) or kernel(q, *a, **k))
    ids = tokens(2, 24)
    ref = eager(ids).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(ids).logits.float()
        out_eager = eager(ids).logits.float()
    assert seen and set(seen) == {torch.bfloat16}
    # Within twice the error of eager attention under the same autocast, plus a bf16 ulp.
    assert (out - ref).abs().max() <= 2 * (out_eager - ref).abs().max() + 2**-8


# ---- the attention function against transformers' own mask rules, one argument at a time -----------

def _overlay_mask(sq, sk, causal, window):
    """The additive (1, 1, sq, sk) mask of transformers' mask functions, queries at the end of
    the keys."""
    from transformers.masking_utils import (causal_mask_function, sliding_window_bidirectional_overlay,
                                            sliding_window_overlay)
    fns = [causal_mask_function] if causal else []
    if window is not None:
        fns.append(sliding_window_overlay(window) if causal else sliding_window_bidirectional_overlay(window))
    i = torch.arange(sq).view(-1, 1) + (sk - sq)
    j = torch.arange(sk).view(1, -1)
    vis = torch.ones(sq, sk, dtype=torch.bool)
    for f in fns:
        vis &= torch.as_tensor(f(0, 0, i, j))
    return torch.where(vis, 0.0, -torch.inf).view(1, 1, sq, sk)


FUNCTION_CASES = {  # name: (layer's is_causal, sliding_window, scaling)
    "scaling": (True, None, 0.3),
    "causal window": (True, 3, None),
    "bidirectional window": (False, 3, None),
    "layer without is_causal": (None, None, None),  # causal, as transformers' decoders
}


@pytest.mark.parametrize("case", FUNCTION_CASES)
def test_attention_function_matches_gpt_oss_eager(case):
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward
    causal, window, scaling = FUNCTION_CASES[case]
    torch.manual_seed(0)
    d, s = 32, 11
    layer = _Layer(causal=causal)
    q, k, v = torch.randn(2, 4, s, d), torch.randn(2, 2, s, d), torch.randn(2, 2, s, d)
    scale = scaling if scaling is not None else d**-0.5
    out, _ = _attention.sinkattn_attention_forward(layer, q, k, v, None, scaling=scale,
                                                   sliding_window=window, s_aux=layer.sinks)
    mask = _overlay_mask(s, s, causal is not False, window)
    ref, _ = eager_attention_forward(layer, q, k, v, mask, scaling=scale)
    torch.testing.assert_close(out, ref)


def _each_alone(layer, q, k, v, cu_q, cu_k):
    """The packed (1, H, T, D) batch as one attention call per sequence (bottom-right causal)."""
    outs = []
    for a, b, c, e in zip(cu_q[:-1], cu_q[1:], cu_k[:-1], cu_k[1:]):
        o, _ = _attention.sinkattn_attention_forward(layer, q[:, :, a:b], k[:, :, c:e], v[:, :, c:e],
                                                     None, scaling=0.25, s_aux=layer.sinks)
        outs.append(o)
    return torch.cat(outs, 1)


def test_packed_position_ids_start_a_sequence_at_any_jump():
    """INTEGRATION.md's rule: any step other than +1 starts a sequence, a jump up included."""
    layer = _Layer()
    q, k, v = torch.randn(1, 4, 9, 32), torch.randn(1, 2, 9, 32), torch.randn(1, 2, 9, 32)
    pos = torch.tensor([[0, 1, 2, 3, 7, 8, 9, 4, 5]])  # three sequences: 0-3, 7-9, 4-5
    out, _ = _attention.sinkattn_attention_forward(layer, q, k, v, None, scaling=0.25,
                                                   s_aux=layer.sinks, position_ids=pos)
    torch.testing.assert_close(out, _each_alone(layer, q, k, v, [0, 4, 7, 9], [0, 4, 7, 9]))


def test_explicit_cu_seq_lens_with_more_keys_than_queries():
    """cu_seq_lens_q / _k that differ (a cache before each sequence's queries), lengths not given."""
    layer = _Layer()
    cu_q, cu_k = torch.tensor([0, 2, 5]), torch.tensor([0, 4, 9])
    q, k, v = torch.randn(1, 4, 5, 32), torch.randn(1, 2, 9, 32), torch.randn(1, 2, 9, 32)
    out, _ = _attention.sinkattn_attention_forward(layer, q, k, v, None, scaling=0.25,
                                                   s_aux=layer.sinks, cu_seq_lens_q=cu_q,
                                                   cu_seq_lens_k=cu_k)
    torch.testing.assert_close(out, _each_alone(layer, q, k, v, cu_q.tolist(), cu_k.tolist()))


def test_mask_longer_than_the_keys_keeps_its_last_columns():
    """A sliding-window cache holds only the last keys: the mask's columns for them are its last."""
    layer = _Layer()
    q, k, v = torch.randn(2, 4, 1, 32), torch.randn(2, 2, 6, 32), torch.randn(2, 2, 6, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :3] = False  # left padding, outside the cached keys
    mask[0, 5] = False   # a padded key inside them
    args = dict(scaling=0.25, s_aux=layer.sinks)
    out, _ = _attention.sinkattn_attention_forward(layer, q, k, v, mask, **args)
    ref, _ = _attention.sinkattn_attention_forward(layer, q, k, v, mask[:, -6:].clone(), **args)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_padding_plan_sees_a_mask_changed_in_place():
    from sinkattn.hf import _batching
    mask = torch.ones(2, 6, dtype=torch.bool)
    before = _batching.padding_plan(mask, 6)
    mask[1, :2] = False
    after = _batching.padding_plan(mask, 6)
    assert before.cu_seqlens_k.tolist() == [0, 6, 12] and after.cu_seqlens_k.tolist() == [0, 6, 10]
