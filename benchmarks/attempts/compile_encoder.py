"""Attempt (issue 21, session 12): the fused encoder's forward under ``torch.compile`` on the CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attempts/compile_encoder.py --tag NAME

Runs the default block step (ML-100K shape, blocks of 100, one thread; as ``profile_xfvae.py``)
twice in fresh subprocesses: eager, and with the encoder's forward (Eq. 8-10, both sides; what
``xfvae.models.fused.encode_forward`` computes after its index lookups) compiled by Inductor with
``dynamic=True``. Reports forward, backward and optimiser milliseconds per block (after one epoch
of warm-up), the compile time, the number of graphs compiled (one means no recompilation across
block shapes) and, for the compiled run, the per-call costs the profiler names (Dynamo's cache
lookup, the compiled graph). Results: ``benchmarks/results/compile_encoder_<tag>.json``.

``_forward_math`` is a copy of ``encode_forward``'s arithmetic at commit fc05643 for the default
configuration (data and latent input, local attention, concat merge) that takes only tensors and
constants: Dynamo guards on every Python object an input holds, and the batch's ``RowSlice`` is a
new one per batch, which recompiled per block (the earlier attempt). Not a training path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "src")]


def _forward_math(lay, keys, v, v_t, floor: float):
    import torch

    from xfvae.models.fused import bag_sum

    n, k = keys.shape
    m = v["bias0"].shape[1]
    p_table = bag_sum(lay["flat"], v["phi0"].view(n * k, m), lay["flat_offsets"], keys.view(-1))
    b = lay["offsets"].shape[0] // 2
    table = torch.cat([v["w0"], p_table, v["bias0"]])
    s = bag_sum(lay["idx"], table, lay["offsets"], lay["w"]).view(b, 2 * m).clamp_min(0)
    both = torch.addmm(v["b_h"], s, v_t["w_h"])
    sig0 = torch.sigmoid(both[:, k:])
    var0 = torch.lerp(sig0, torch.ones_like(sig0), floor) if floor > 0 else sig0
    x2 = torch.cat([both[:, :k], var0]).view(2, b, k)
    th = v["th"] * (1.0 / math.sqrt(k))  # softmax normalisation
    q = torch.bmm(x2, th).view(2 * b, k)
    nnz = lay["query_row"].shape[0] // 2
    e = (q.index_select(0, lay["query_row"]).view(2, nnz, k) * lay["vk"]).sum(-1).view(-1)
    peak = torch.segment_reduce(e, "max", lengths=lay["pair_lengths"], unsafe=True)
    e = (e - peak.index_select(0, lay["query_row"])).exp()
    num_den = bag_sum(lay["pair_entry"], lay["vk1"], lay["pair_offsets"], e)
    den = num_den[:, k:] + lay["empty"]
    c = num_den[:, :k] / den
    direct = both.view(b, 2, k).transpose(0, 1)
    y2 = torch.cat([direct, c.view(2, b, k)], 2)
    out = torch.baddbmm(v["b_m"], y2, v_t["w_m"])
    mu, sig = out[0], torch.sigmoid(out[1])
    var = torch.lerp(sig, torch.ones_like(sig), floor) if floor > 0 else sig
    return mu, var, s, sig, sig0, x2, th, e, den, c, y2


def _patch_compiled() -> dict:
    """Route ``FusedBlock``'s encoder forward through the compiled ``_forward_math``."""
    import torch

    import xfvae.models.fused as fused
    import xfvae.models.fused_block as fused_block

    compiled = torch.compile(_forward_math, dynamic=True)
    stats = {"first_call_s": None, "max_abs_diff_vs_eager": 0.0}
    eager = fused.encode_forward

    def encode_forward(enc, rows, keys, v, v_t):
        n, k = keys.shape
        att = enc.attention
        default = enc.use_data_input and enc.use_cross_feedback and att is not None
        if not (default and att.norm == "softmax" and att.merge == "concat"):
            raise SystemExit("the probe covers the default configuration only")
        lay = fused._Layout.of(rows, n, True, True, True)
        w, _, empty = lay.weights(v["bias0"].dtype)
        vk1, vk = lay.keys_at_entries(keys)
        flat, flat_offsets = fused._flat_indices(n, k, keys.device)
        tensors = dict(idx=lay.idx, offsets=lay.offsets, w=w, empty=empty, vk=vk, vk1=vk1,
                       query_row=lay.query_row, pair_lengths=lay.pair_lengths,
                       pair_entry=lay.pair_entry, pair_offsets=lay.pair_offsets, flat=flat,
                       flat_offsets=flat_offsets)  # fmt: skip
        t0 = time.perf_counter()
        mu, var, *saved = compiled(tensors, keys, v, v_t, float(enc.var_floor))
        if stats["first_call_s"] is None:
            stats["first_call_s"] = time.perf_counter() - t0
        if stats.setdefault("checked_calls", 0) < 20:  # the same values as the eager forward?
            mu_e, var_e, _ = eager(enc, rows, keys, v, v_t)
            diff = max((mu - mu_e).abs().max().item(), (var - var_e).abs().max().item())
            stats["max_abs_diff_vs_eager"] = max(stats["max_abs_diff_vs_eager"], diff)
            stats["checked_calls"] += 1
        s, sig, sig0, x2, th, e, den, c, y2 = saved
        return mu, var, (lay, keys, s, v["w_h"], sig, sig0, x2, th, e, den, c, y2, v["w_m"])

    fused_block.encode_forward = encode_forward
    return stats


def worker(mode: str) -> dict:
    import profile_xfvae as prof
    import torch
    from bench_xfvae import default_net_and_optimizer, synthetic_train_data

    from xfvae.data.batches import BlockPlan

    torch.set_num_threads(1)
    stats = _patch_compiled() if mode == "compiled" else {}
    users, items, ratings, b, attention = prof.CASES["ml100k"]
    data = synthetic_train_data(ratings, users, items)
    torch.manual_seed(0)
    net, opt = default_net_and_optimizer(data, [b, b], (f"model.net.attention={attention}",))
    plan = BlockPlan(data, b, b, seed=0)
    net.on_fit_start()
    net.on_train_epoch_start(0)
    blocks = prof.cyclic_blocks(plan, "cpu")
    t0 = time.perf_counter()
    for _ in range(plan.n_ub * plan.n_ib):  # one epoch: index caches built, graphs compiled
        prof.step(net, opt, next(blocks))
    out = {"mode": mode, "warmup_epoch_s": round(time.perf_counter() - t0, 2), **stats}
    batch = [next(blocks) for _ in range(plan.n_ub * plan.n_ib)]
    phases = [0.0, 0.0, 0.0]
    for blk in batch:
        t0 = time.perf_counter()
        loss = net.loss(blk)["loss"]
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        for i, dt in enumerate((t1 - t0, t2 - t1, t3 - t2)):
            phases[i] += dt
    n = len(batch)
    names = ("forward", "backward", "optimizer")
    for name, seconds in zip(names, phases, strict=True):
        out[f"{name}_ms_per_block"] = round(1e3 * seconds / n, 3)
    out["ms_per_block"] = round(sum(out[f"{name}_ms_per_block"] for name in names), 3)
    if mode == "compiled":
        from torch._dynamo.utils import counters
        from torch.profiler import ProfilerActivity, profile

        out["graphs_compiled"] = counters["stats"]["unique_graphs"]
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for blk in batch[:50]:
                prof.step(net, opt, blk)
        keep = ("TorchDynamo Cache Lookup", "Torch-Compiled Region", "Call CompiledFxGraph")
        out["per_call_us"] = {
            e.key[:40]: round(e.cpu_time_total / e.count, 1)
            for e in p.key_averages()
            if e.key.startswith(keep)
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default="")
    ap.add_argument("--worker", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker)))
        return
    from bench_xfvae import load
    from profile_xfvae import commit

    from xfvae.runs.atomic import atomic_write_json

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = {"commit": commit(), "load_avg_start": load(), "runs": []}
    for mode in ("eager", "compiled", "eager", "compiled"):  # alternating
        cmd = [sys.executable, __file__, "--worker", mode]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            res["runs"].append({"mode": mode, "error": run.stderr[-2000:]})
        else:
            res["runs"].append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(res["runs"][-1]), flush=True)
    res["load_avg_end"] = load()
    path = BENCH / "results" / f"compile_encoder{'_' + a.tag if a.tag else ''}.json"
    atomic_write_json(path, res)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
