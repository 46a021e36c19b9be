"""The L2 model of the Hopper backward's launch order (tests/cuda/bwd_l2_model.py), on a shape
small enough to walk by hand, and on llama 8k, whose order sm80/grid.h kv_group picks
from it (2 kv heads at a time)."""
from __future__ import annotations

import importlib.util
import os

spec = importlib.util.spec_from_file_location(
    "bwd_l2_model", os.path.join(os.path.dirname(__file__), "..", "cuda", "bwd_l2_model.py"))
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)


def test_one_block_per_sm_walks_its_steps_and_misses_each_tile_once():
    # 2 kv heads, 1 query head each, 2 key blocks over 2 query blocks: block n walks 2 - n steps;
    # 4 SMs take all four blocks at once, so the walk ends after 2 steps and each of the 4 q / dO
    # and 4 dq tiles misses once (6 step visits: 12 accesses).
    end, misses, hits = model.walk(2, 1, 2, 1, 2, kv_group=1, sms=4)
    assert (end, misses, hits) == (2, 8, 4)


def test_llama_8k_two_kv_heads_at_a_time_cut_misses_for_a_walk_about_as_long():
    end8, miss8, _ = model.walk(*model.SHAPES["llama8k"], kv_group=8)
    end2, miss2, _ = model.walk(*model.SHAPES["llama8k"], kv_group=2)
    assert miss2 < miss8 / 5
    assert end2 <= end8 * 1.01
