"""mode='ring' (contiguous layout) and zigzag ring (zigzag layout): K/V rotate around the group.

At step t rank r holds the K/V of rank (r - t) mod W, computes its local queries against them and
meanwhile passes them on to rank r + 1 (double buffering: the next block is received into a second
buffer while the current one is computed on). Blocks no local query can see (causal blocks from
later ranks, blocks beyond a sliding window) have empty plans and are not computed; when every
rank's remaining steps are empty the rotation stops early (a window shorter than the ring needs
only a few hops), decided from the plans, so all ranks agree without communication.

Backward: K/V rotate again; each block's dK/dV accumulator (fp32) travels with it, gaining this
rank's contribution, and after the last step goes straight back to the block's owner. The
accumulator of the previous step is received while the current block computes.
"""

from __future__ import annotations

import torch

from . import comm, local, merge, plan
from .problem import Problem


def _plans(P: Problem):
    """(calls for each step, steps). Every rank can build every rank's plans, so all ranks agree
    on the number of steps without communicating."""
    W = P.world
    mine = P.segs(P.rank)
    calls = [plan.build(mine, P.segs((P.rank - t) % W), P.left, P.right) for t in range(W)]
    steps = 1
    for r in range(W):
        segs = P.segs(r)
        for t in range(W - 1, steps - 1, -1):
            if plan.build(segs, P.segs((r - t) % W), P.left, P.right):
                steps = t + 1
                break
    return calls, steps


class Ring:
    def __init__(self, P: Problem):
        self.P = P
        self.calls, self.steps = P.cached("ring", lambda: _plans(P))

    def _rotate(self, kv, t) -> tuple:
        """Starts passing kv on (step t -> t + 1): (pending, next buffer), or (None, None)."""
        if t + 1 >= self.steps:
            return None, None
        P, nxt = self.P, torch.empty_like(kv)
        with comm.profile_range("sinkattn.cp.ring.kv", P.profile):
            pend = comm.exchange(P.group, [(kv, (P.rank + 1) % P.world)],
                                 [(nxt, (P.rank - 1) % P.world)])
        return pend, nxt

    def forward(self, q, k, v, sinks):
        P = self.P
        acc_out, acc_lse = merge.empty(q.shape[0], P.hq, P.dim, q.device)
        cur = torch.stack((k, v), 1)  # (T, 2, Hkv, D): one message per hop
        for t in range(self.steps):
            pend, nxt = self._rotate(cur, t)
            if self.calls[t]:
                with comm.profile_range("sinkattn.cp.ring.fwd", P.profile):
                    local.forward(self.calls[t], q, cur[:, 0], cur[:, 1], P.scale, acc_out, acc_lse)
            if pend is not None:
                pend.wait()
                cur = nxt
        out, lse = merge.add_sink(acc_out, acc_lse, sinks)
        return out.to(q.dtype), lse

    def backward(self, dout, q, k, v, out, lse, sinks):  # dsink: None, api.py computes it
        P, W, r = self.P, self.P.world, self.P.rank
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        cur = torch.stack((k, v), 1)
        incoming = None  # the previous step's dK/dV accumulator, in flight to us
        for t in range(self.steps):
            pend, nxt = self._rotate(cur, t)
            g = torch.zeros(cur.shape, dtype=torch.float32, device=cur.device)
            if self.calls[t]:
                with comm.profile_range("sinkattn.cp.ring.bwd", P.profile):
                    local.backward(self.calls[t], dout, q, cur[:, 0], cur[:, 1], out, lse, P.scale,
                                   P.deterministic, dq, g[:, 0], g[:, 1])
            if incoming is not None:
                g += incoming.wait()[0]
            last = t + 1 == self.steps
            dst = (r - t) % W if last else (r + 1) % W  # last hop: home to the block's owner
            src = (r + t) % W if last else (r - 1) % W
            if dst == r:
                incoming = None
                final = g
            else:
                with comm.profile_range("sinkattn.cp.ring.dkv", P.profile):
                    incoming = comm.exchange(P.group, [(g, dst)], [(torch.empty_like(g), src)])
            if pend is not None:
                pend.wait()
                cur = nxt
        if incoming is not None:
            final = incoming.wait()[0]
        return dq.to(q.dtype), final[:, 0].to(k.dtype), final[:, 1].to(v.dtype), None
