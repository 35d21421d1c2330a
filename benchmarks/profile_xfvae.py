"""Where one block step of the cross-feedback VAE spends its time (issue 11). Not a test.

    python benchmarks/profile_xfvae.py --device cuda [--cases ml100k ml20m-global ...]
    python benchmarks/profile_xfvae.py --cases ml100k ml100k-fixed-cost   # fixed cost vs arithmetic

Each case builds the committed default config (``conf/model/xfvae.yaml``) on synthetic data of a
paper shape (speed depends on shape and number of ratings only) and runs Algorithm 1's block step
(loss, backward, optimiser step) outside the training loop:

* eager, timed: wall and process-CPU milliseconds per block (after a warm-up);
* eager, profiled (``torch.profiler``): operator calls, kernel launches and CUDA runtime calls per
  block, the device's busy time per block (sum of kernel times), and the top operators by self CPU
  time and the top kernels by device time, each with its share;
* on CUDA, the same step captured once in a CUDA graph (``torch.cuda.graph``, Adam with
  ``capturable=True``) and replayed on one fixed block: what the step costs without host overhead.
  An experiment that bounds the gain of graph capture, not a training path;
* on CUDA, a case named ``<case>+tf32`` repeats the eager timing with TF32 matrix products.

Each case in its own process where a failed graph capture could spoil the next one (the
``gpu_checks.sh`` steps do so).

The warm-up is one epoch of blocks unless ``--warmup`` says otherwise: per-batch structures (the
fused encoder's bag indices) are built on a batch's first visit, once per run, and belong to no
steady-state step. ``--src DIR`` imports ``xfvae`` from another source tree (e.g. an older commit
exported with ``git archive <commit> src | tar -x -C DIR/..``) for before/after rows measured by
the same script on the same machine.

Next to each: the floor of ``xfvae_floor.py`` (the block's FLOPs and bytes over the device's peak
rates). Results: ``benchmarks/results/profile_xfvae_<device>[_<tag>].json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

# name: (users, items, training ratings, block size, attention)
CASES = {
    "ml100k": (943, 1682, 70_000, 100, "local"),
    # the same operator sequence as ml100k (config, blocks of 100) on 120 x 150 with 1,500 ratings:
    # almost no arithmetic, so its time per block is the step's fixed cost (Python, dispatch,
    # allocation) and ml100k's minus it what the arithmetic costs (issue 21)
    "ml100k-fixed-cost": (120, 150, 1_500, 100, "local"),
    "ml1m-paperrule": (6040, 3706, 700_000, 100, "local"),
    "ml20m-global": (138_493, 26_744, 20_000_000, 1000, "global"),
    "ml20m-local": (138_493, 26_744, 20_000_000, 1000, "local"),
    "ml20m-none": (138_493, 26_744, 20_000_000, 1000, "none"),
}


def cyclic_blocks(plan, device):
    """Blocks of successive epochs' orders, endlessly (the step's cost does not depend on order)."""
    from xfvae.data.batches import epoch_generator, iter_blocks

    for epoch in itertools.count():
        for b in iter_blocks(plan, epoch_generator(0, epoch), shuffle=True):
            yield b.to(device)


def step(net, opt, block) -> None:
    out = net.loss(block)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()


def timed(net, opt, blocks, n: int, device: str) -> dict:
    from bench_xfvae import sync

    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        step(net, opt, next(blocks))
    sync(device)
    return {
        "blocks": n,
        "ms_per_block": 1e3 * (time.perf_counter() - wall) / n,
        "cpu_ms_per_block": 1e3 * (time.process_time() - cpu) / n,
    }


def top(rows: list[dict], key: str, k: int = 12) -> list[dict]:
    total = sum(r[key] for r in rows) or 1.0
    rows = sorted(rows, key=lambda r: -r[key])[:k]
    return [{**r, "share": round(r[key] / total, 4)} for r in rows]


def profiled(net, opt, blocks, n: int, device: str) -> dict:
    """Per-block operator, kernel and runtime-call counts and the top entries of a profile."""
    from bench_xfvae import sync
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sync(device)
    with profile(activities=acts) as prof:
        for _ in range(n):
            step(net, opt, next(blocks))
        sync(device)
    ops, kernels, runtime = [], [], []
    for e in prof.key_averages():
        dev_us = getattr(e, "self_device_time_total", None)
        if dev_us is None:
            dev_us = getattr(e, "self_cuda_time_total", 0.0)
        row = {"name": e.key[:90], "calls_per_block": e.count / n}
        if "#" in e.key and e.device_type != DeviceType.CPU:  # a range on the device timeline
            continue  # (Optimizer.step#Adam.step): its kernels are listed on their own
        if e.device_type == DeviceType.CPU:
            if e.key.startswith(("cuda", "cu")):
                runtime.append({**row, "self_cpu_us_per_block": e.self_cpu_time_total / n})
            else:
                ops.append({**row, "self_cpu_us_per_block": e.self_cpu_time_total / n})
        else:
            kernels.append({**row, "device_us_per_block": dev_us / n})
    out = {
        "blocks": n,
        "operator_calls_per_block": sum(r["calls_per_block"] for r in ops),
        "operator_self_cpu_ms_per_block": sum(r["self_cpu_us_per_block"] for r in ops) / 1e3,
        "top_operators_by_self_cpu": top(ops, "self_cpu_us_per_block"),
    }
    if device == "cuda":
        out.update(
            kernel_launches_per_block=sum(r["calls_per_block"] for r in kernels),
            device_busy_ms_per_block=sum(r["device_us_per_block"] for r in kernels) / 1e3,
            top_kernels_by_device_time=top(kernels, "device_us_per_block"),
            runtime_calls_per_block=top(runtime, "self_cpu_us_per_block", k=8),
        )
    return out


def graph_replay(net, opt, block, n: int) -> dict:
    """The step captured in one CUDA graph on a fixed block, replayed ``n`` times, with a
    capturable copy of the optimiser ``opt`` (same settings, fresh state)."""
    import torch

    # the tensors ``opt`` updates: with the flat parameter tensor (issue 21) that is one tensor,
    # not net.parameters(), whose views get no gradient of their own
    params = [p for group in opt.param_groups for p in group["params"]]
    opt = type(opt)(params, **{**opt.defaults, "capturable": True})
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (allocator, lazy init)
        for _ in range(3):
            step(net, opt, block)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        out = net.loss(block)
        out["loss"].backward()
        opt.step()
    graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        graph.replay()
    torch.cuda.synchronize()
    return {"blocks": n, "ms_per_block": 1e3 * (time.perf_counter() - t0) / n}


def run_case(name: str, data, device: str, args, tf32: bool = False) -> dict:
    import torch
    from bench_xfvae import default_net_and_optimizer, net_block_cost, with_floor
    from xfvae_floor import device_peaks

    from xfvae.data.batches import BlockPlan

    b, attention = CASES[name][3:]
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    over = (f"model.net.attention={attention}",)
    with torch.device(device):
        net, opt = default_net_and_optimizer(data, [b, b], over)
    net.to(device)
    plan = BlockPlan(data, b, b, seed=0).on(device)
    net.on_fit_start()
    net.on_train_epoch_start(0)
    blocks = cyclic_blocks(plan, device)
    res = {"case": name, "tf32": tf32, "attention": net.attention, "block_size": b}
    res["blocks_per_epoch"] = plan.n_ub * plan.n_ib
    warmup = res["blocks_per_epoch"] if args.warmup is None else args.warmup
    timed(net, opt, blocks, warmup, device)
    res["eager"] = timed(net, opt, blocks, args.blocks, device)
    res["projected_epoch_seconds"] = res["eager"]["ms_per_block"] * res["blocks_per_epoch"] / 1e3
    if not tf32:
        try:
            res["profile"] = profiled(net, opt, blocks, args.profile_blocks, device)
        except Exception:  # a profiler quirk must not lose the timings
            res["profile_error"] = traceback.format_exc()[-1500:]
        if device == "cuda":
            try:
                res["cuda_graph"] = graph_replay(net, opt, next(blocks), args.blocks)
            except Exception:
                res["cuda_graph_error"] = traceback.format_exc()[-1500:]
    res["seconds_per_block"] = res["eager"]["ms_per_block"] / 1e3
    cost = net_block_cost(net, data, [b, b])
    res = with_floor(res, cost, device_peaks(device), res["blocks_per_epoch"])
    if device == "cuda":
        res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def commit() -> str:
    """The checkout's commit (with ``+dirty`` for uncommitted changes); --src trees are named by
    their directory."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")  # new result files do not count
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--cases", nargs="+", default=["ml100k", "ml20m-global", "ml20m-local",
                                                  "ml20m-none"])  # fmt: skip
    p.add_argument("--warmup", type=int, default=None, help="blocks (default: one epoch)")
    p.add_argument("--src", default=None, help="import xfvae from this source tree")
    p.add_argument("--blocks", type=int, default=30, help="timed blocks per case")
    p.add_argument("--profile-blocks", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    if a.src:
        sys.path.insert(0, str(Path(a.src).resolve()))
    import torch
    from bench_xfvae import load, synthetic_train_data

    from xfvae.runs.atomic import atomic_write_json

    torch.set_num_threads(a.threads)
    out = {
        "device": a.device,
        "device_name": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_start": load(),
        "xfvae_src": str(Path(sys.modules["xfvae"].__file__).parent),
        "commit": commit(),
        "cases": [],
    }
    path = HERE / "results" / f"profile_xfvae_{a.device}{'_' + a.tag if a.tag else ''}.json"
    data, data_shape = None, None  # consecutive cases of one shape share their data
    for name in a.cases:  # NAME+tf32: the eager timing with TF32 matrix products (cuda)
        base, tf32 = name.removesuffix("+tf32"), name.endswith("+tf32")
        shape = CASES[base][:3]
        t0 = time.perf_counter()
        if shape != data_shape:
            data = None  # freed before the next is built: one ML-20M-sized data set at a time
            data = synthetic_train_data(shape[2], shape[0], shape[1])
            _ = data.csr, data.csr_t
            data_shape = shape
        try:
            res = run_case(base, data, a.device, a, tf32=tf32)
        except Exception:
            res = {"case": name, "error": traceback.format_exc()[-2000:]}
        res["case_seconds"] = round(time.perf_counter() - t0, 1)
        out["cases"].append(res)
        out["load_avg_end"] = load()
        atomic_write_json(path, out)  # after every case: a timed-out run keeps what it measured
        brief = {k: res.get(k) for k in ("case", "tf32", "eager", "cuda_graph", "error")}
        print(json.dumps(brief), flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
