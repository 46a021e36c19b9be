"""attn_implementation="<org>/sinkattn" through transformers' hub-kernel path, loaded from the
local kernels-hub folder with LOCAL_KERNELS (no upload, no network). Needs the `kernels` package;
skipped where it is not installed (transformers 5.17 accepts kernels 0.16.x)."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from transformers import AttentionInterface
from transformers.utils.import_utils import is_kernels_available

if not is_kernels_available():
    pytest.skip("needs the `kernels` package, in the versions transformers accepts", allow_module_level=True)

import sinkattn.hf  # noqa: E402
from sinkattn.hf.configs import tiny_config  # noqa: E402

REPO = "sinkattn-local/sinkattn"


@pytest.fixture
def hub_model(monkeypatch):
    monkeypatch.setenv("LOCAL_KERNELS", f"{REPO}={sinkattn.hf.kernels_hub_dir()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(tiny_config("gpt_oss"), attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for layer in eager.model.layers:
            layer.self_attn.sinks.normal_(0.0, 1.0)
    ours = copy.deepcopy(eager)
    ours.set_attn_implementation(REPO)
    assert ours.config._attn_implementation == REPO
    return eager, ours


def test_hub_kernel_matches_eager(hub_model, monkeypatch):
    eager, ours = hub_model
    assert REPO in AttentionInterface._global_mapping
    calls = []
    varlen = sinkattn.varlen_attention
    monkeypatch.setattr(sinkattn, "varlen_attention", lambda *a, **k: calls.append(1) or varlen(*a, **k))
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    labels = ids.masked_fill(mask == 0, -100)
    out_ref = eager(ids, attention_mask=mask, labels=labels)
    out = ours(ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    assert calls, "the hub kernel did not reach sinkattn.varlen_attention"
    torch.testing.assert_close(out.logits[real], out_ref.logits[real])
    out_ref.loss.backward()
    out.loss.backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), eager.named_parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{name}: {m}")
    kwargs = dict(attention_mask=mask[:, :7], max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.eval().generate(ids[:, :7], **kwargs), eager.eval().generate(ids[:, :7], **kwargs))
