"""VERL's path to attn_implementation="sinkattn", driven with the shipped example configs.

VERL 0.9.1 (the current PyPI release) pins transformers < 5.11 and pulls in ray, so it cannot be
installed beside transformers 5.17; where `verl` imports, its own functions are used, otherwise
the calls below reproduce VERL 0.9.1's code exactly (file and function named at each step):
  1. external_lib / VERL_USE_EXTERNAL_MODULES -> importlib.import_module("sinkattn.hf")
  2. HFModelConfig.__post_init__: AutoConfig.from_pretrained(attn_implementation=override) and
     update_model_config(hf_config, override_config)
  3. FSDPEngine._build_module: AutoModelForCausalLM.from_pretrained(config=hf_config, ...)
  4. prepare_model_inputs / forward_step with use_remove_padding: jagged batch -> (1, total)
     input_ids and restarting position_ids, attention_mask=None, use_cache=False, optional
     static pad suffix (pad_packed_inputs), then log-probs of the rolled ids.
"""

import copy
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM

from sinkattn.hf.configs import tiny_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "verl"

try:  # VERL's own code, where VERL installs
    from verl.utils.import_utils import import_external_libs
    from verl.utils.model import update_model_config
except ImportError:

    def import_external_libs(external_libs=None):  # verl/utils/import_utils.py
        if external_libs is None:
            return
        if not isinstance(external_libs, list):
            external_libs = [external_libs]
        for external_lib in external_libs:
            importlib.import_module(external_lib)

    def update_model_config(module_config, override_config_kwargs):  # verl/utils/model.py
        for key, val in override_config_kwargs.items():
            if isinstance(val, dict):
                update_model_config(getattr(module_config, key), val)
            else:
                setattr(module_config, key, val)


def shipped_model_section(name, role):
    """The `model` section of `role` ("actor_rollout_ref" or "critic") in examples/verl/<name>."""
    config = yaml.safe_load((EXAMPLES / name).read_text())
    return config[role]["model"]


@pytest.mark.parametrize("how", ["external_lib", "VERL_USE_EXTERNAL_MODULES"])
def test_external_module_registers_sinkattn_in_a_fresh_process(how):
    section = shipped_model_section("ppo_sinkattn.yaml", "actor_rollout_ref")
    env = dict(os.environ)
    if how == "external_lib":  # HFModelConfig.__post_init__: import_external_libs(self.external_lib)
        code = f"import importlib; [importlib.import_module(m) for m in [{section['external_lib']!r}]]"
    else:  # verl/__init__.py: os.getenv("VERL_USE_EXTERNAL_MODULES", "").split(",")
        env["VERL_USE_EXTERNAL_MODULES"] = section["external_lib"]
        code = "import importlib, os; [importlib.import_module(m) for m in os.environ['VERL_USE_EXTERNAL_MODULES'].split(',')]"
    check = (
        "from transformers import AttentionInterface; from transformers.masking_utils import AttentionMaskInterface; "
        "assert 'sinkattn' not in AttentionInterface._global_mapping; "
        f"{code}; "
        "assert 'sinkattn' in AttentionInterface._global_mapping and 'sinkattn' in AttentionMaskInterface._global_mapping"
    )
    subprocess.run([sys.executable, "-c", check], env=env, check=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT-OSS checkpoint on disk (VERL loads models by path)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("gpt_oss"), attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("gpt_oss_tiny")
    model.save_pretrained(path)
    return path, model


def build_like_verl(path, section):
    """HFModelConfig.__post_init__ (verl/workers/config/model.py) then FSDPEngine._build_module
    (verl/workers/engine/fsdp/transformer_impl.py), minus tokenizer and FSDP wrapping."""
    import_external_libs(section["external_lib"])
    override_config = section["override_config"]
    attn_implementation = override_config.get("attn_implementation", "flash_attention_2")
    hf_config = AutoConfig.from_pretrained(path, trust_remote_code=False, attn_implementation=attn_implementation)
    override_config_kwargs = {}
    override_config = override_config["model_config"] if "model_config" in override_config else override_config
    override_config_kwargs.update(override_config)
    update_model_config(hf_config, override_config_kwargs=override_config_kwargs)
    # get_hf_auto_model_class: "GptOssForCausalLM" contains "ForCausalLM" -> AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(
        pretrained_model_name_or_path=path, torch_dtype=torch.float32, config=hf_config, trust_remote_code=False
    )


@pytest.mark.parametrize("config_name", ["ppo_sinkattn.yaml", "grpo_sinkattn.yaml"])
@pytest.mark.parametrize("static_pad", [0, 3])
def test_remove_padding_forward_matches_each_sequence_alone(checkpoint, config_name, static_pad):
    path, eager = checkpoint
    actor = build_like_verl(path, shipped_model_section(config_name, "actor_rollout_ref"))
    assert actor.config._attn_implementation == "sinkattn"
    eager = copy.deepcopy(eager)

    lengths = [6, 11, 4]
    gen = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 128, (n,), generator=gen) for n in lengths]
    # prepare_model_inputs, pad_mode NO_PADDING: jagged micro-batch -> one packed row.
    input_ids = torch.nested.as_nested_tensor(seqs, layout=torch.jagged)
    position_ids = torch.nested.as_nested_tensor([torch.arange(n) for n in lengths], layout=torch.jagged)
    input_ids_rmpad = input_ids.values().unsqueeze(0)  # (1, total_nnz)
    position_ids_rmpad = position_ids.values().unsqueeze(0)  # (1, total_nnz)
    input_ids_rmpad_rolled = torch.roll(input_ids_rmpad, shifts=-1, dims=1)
    if static_pad:  # verl/workers/engine/utils.py pad_packed_inputs: pad positions restart at 0
        input_ids_rmpad = torch.cat([input_ids_rmpad, input_ids_rmpad.new_zeros(1, static_pad)], -1)
        position_ids_rmpad = torch.cat([position_ids_rmpad, torch.arange(static_pad)[None]], -1)
    model_inputs = {"input_ids": input_ids_rmpad, "attention_mask": None, "position_ids": position_ids_rmpad}
    logits = actor(**model_inputs, use_cache=False).logits.squeeze(0)  # forward_step
    total = sum(lengths)
    # logprobs_from_logits (the log_softmax + gather fallback), on the real tokens
    log_probs = torch.log_softmax(logits[:total], -1).gather(-1, input_ids_rmpad_rolled[0, :, None]).squeeze(-1)

    start, ref_sum, ours_sum = 0, 0.0, 0.0
    for seq, n in zip(seqs, lengths):
        alone = eager(seq[None]).logits[0]
        torch.testing.assert_close(logits[start : start + n], alone)
        # within a sequence the rolled label is the next token; its last label belongs to the next one
        ref = torch.log_softmax(alone[:-1], -1).gather(-1, seq[1:, None]).squeeze(-1)
        torch.testing.assert_close(log_probs[start : start + n - 1], ref)
        ours_sum = ours_sum + log_probs[start : start + n - 1].sum()
        ref_sum = ref_sum + ref.sum()
        start += n
    ours_sum.backward()
    ref_sum.backward()
    for (name, p), (_, q) in zip(actor.named_parameters(), eager.named_parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{name}: {m}")


def test_shipped_configs_set_sinkattn_for_every_role():
    for name in ["ppo_sinkattn.yaml", "grpo_sinkattn.yaml"]:
        config = yaml.safe_load((EXAMPLES / name).read_text())
        roles = ["actor_rollout_ref"] + (["critic"] if name.startswith("ppo") else [])
        for role in roles:
            model = config[role]["model"]
            assert model["external_lib"] == "sinkattn.hf"
            assert model["override_config"]["attn_implementation"] == "sinkattn"
            assert model.get("use_remove_padding", True)
        env = config["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
        assert env["VERL_USE_EXTERNAL_MODULES"] == "sinkattn.hf"
