"""The Hopper dK/dV kernel's walk through a model of L2, for its launch order (sm80/grid.h
kv_group): blocks of (128 keys, kv head) start in launch order on free SMs (one per SM) and
take one step per time unit (a query block of one query head of the group: head by head, query
blocks from the block's diagonal up); each step reads its q / dO tile and reduces into its dq
tile (32 KB each) through an LRU cache of 50 MB. Prints, per launch order, the walk's length in
steps and the misses: the DRAM reads (dirty dq lines are written back on top). Causal, one
sequence; no torch needed.
    python3 bwd_l2_model.py [SHAPE ...]   (llama8k gptoss16k gptoss4k gptoss32k llama32k)"""
import heapq
import sys
from collections import OrderedDict

# kv heads, query heads per kv head, key blocks, query blocks per key block, query blocks
SHAPES = {"llama8k": (8, 4, 64, 2, 128), "llama32k": (8, 4, 256, 2, 512),
          "gptoss4k": (8, 8, 32, 1, 32), "gptoss16k": (8, 8, 128, 1, 128),
          "gptoss32k": (8, 8, 256, 1, 256)}


def walk(kv_heads, group, blocks, q_per_k, q_blocks, kv_group, sms=132, l2_tiles=1600):
    order = [(kv, n) for g0 in range(0, kv_heads, kv_group) for n in range(blocks)
             for kv in range(g0, g0 + kv_group)]
    steps = lambda kv, n: ((kv, h, m) for h in range(group) for m in range(q_per_k * n, q_blocks))
    pending, running, events = iter(order), {}, []
    for sm in range(min(sms, len(order))):
        running[sm] = steps(*next(pending))
        heapq.heappush(events, (0, sm))
    cache, misses, hits, end = OrderedDict(), 0, 0, 0
    while events:
        t, sm = heapq.heappop(events)
        step = next(running[sm], None)
        if step is None:
            block = next(pending, None)
            if block is None:
                end = max(end, t)
                continue
            running[sm] = steps(*block)
            step = next(running[sm])
        for tile in (("q",) + step, ("dq",) + step):
            if tile in cache:
                hits += 1
                cache.move_to_end(tile)
            else:
                misses += 1
                cache[tile] = True
                if len(cache) > l2_tiles:
                    cache.popitem(last=False)
        heapq.heappush(events, (t + 1, sm))
    return end, misses, hits


def main():
    for name in sys.argv[1:] or ["llama8k", "gptoss16k"]:
        kv_heads = SHAPES[name][0]
        for kv_group in [g for g in (1, 2, 4, 8) if kv_heads % g == 0]:
            end, misses, hits = walk(*SHAPES[name], kv_group)
            print(f"{name:10s} {kv_group} kv heads at a time: {end} steps, "
                  f"misses {misses * 32 / 1024:.0f} MB, hit rate {hits / (hits + misses):.3f}")


if __name__ == "__main__":
    main()
