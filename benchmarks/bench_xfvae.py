"""Speed and memory of the cross-feedback VAE (issues 3 and 11). Not part of the test suite; it
never asserts a timing.

    python benchmarks/bench_xfvae.py ml100k     # default config through the real loop (train()):
                                                # 1 and 2 threads, without and with the EMA callback
    python benchmarks/bench_xfvae.py scaling    # synthetic 0.5/1/2/4 M ratings, fixed 10 x 10 blocks
    python benchmarks/bench_xfvae.py paperrule  # synthetic ML-100K .. ML-1M shapes, B = 100, next
                                                # to VAE-CF, both through train()
    python benchmarks/bench_xfvae.py ml20m      # ML-20M shape (B = 1000): s/block, projected epoch,
                                                # peak RSS, global / local / no attention
    python benchmarks/bench_xfvae.py speedbar   # the speed bar of issue 21: ML-100K through the loop,
                                                # xfvae and VAE-CF (--epochs 6, seed 0) in one call

``--device cuda`` runs a part on the GPU (results file suffix ``_cuda``), ``--threads`` sets the
torch threads, ``--tag`` adds a suffix. Each case runs in a fresh subprocess (its own peak RSS) and
reports seconds per block and per epoch next to a floor (``xfvae_floor.py``: the block's FLOPs
and bytes over the device's peak rates), with the device, threads, load average and
``OMP_WAIT_POLICY``. Results go to ``benchmarks/results/bench_xfvae_<part>[_<tag>].json``.

On a machine shared with other jobs, set ``OMP_WAIT_POLICY=PASSIVE`` for runs with more than one
thread: with the default (spinning) policy each parallel region waits for a descheduled worker
thread, which made 2-thread epochs 3-5x slower than 1-thread ones at a load average of 4 here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xfvae.runs.provenance import peak_rss_mb

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent
EMA = [
    "++model.callbacks.ema._target_=xfvae.training.callbacks.EMAWeights",
    "++model.callbacks.ema.decay=0.995",
]
# (name, users, items, density) from ML-100K's shape to ML-1M's (geometric steps)
PAPER_SHAPES = [
    ("ml-100k", 943, 1682, 0.063),
    ("step-1", 1742, 2181, 0.056),
    ("step-2", 3234, 2858, 0.050),
    ("ml-1m", 6040, 3706, 0.0447),
]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def child(spec: dict, threads: int) -> dict:
    """Run this script's worker mode on ``spec`` in a subprocess with ``threads`` torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "_worker", json.dumps(spec), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr[-3000:], "spec": spec}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----- workers (run inside the subprocess) -------------------------------------------------------
def synthetic_train_data(n_ratings: int, n_users: int, n_items: int, seed: int = 0):
    """Uniformly random distinct cells with random ratings (speed depends on shape and nnz only)."""
    import numpy as np
    import torch

    from xfvae.data.train_data import TrainData

    rng = np.random.default_rng(seed)
    cells = np.unique(
        rng.integers(0, n_users * n_items, size=int(n_ratings * 1.02), dtype=np.int64)
    )
    cells = rng.permutation(cells)[:n_ratings]
    users, items = cells // n_items, cells % n_items
    ratings = rng.integers(1, 6, size=users.size).astype(np.float32)
    return TrainData(
        n_users,
        n_items,
        torch.from_numpy(users),
        torch.from_numpy(items),
        torch.from_numpy(ratings),
        1.0,
        5.0,
    )


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from xfvae import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def default_net_and_optimizer(data, block: list[int], overrides: tuple[str, ...] = ()):
    """The committed conf/model/xfvae.yaml (plus ``overrides``), instantiated as the loop does."""
    from hydra.utils import instantiate

    base = ["model=xfvae", f"model.batch_size=[{block[0]},{block[1]}]"]
    cfg = compose(base + list(overrides))
    net = instantiate(cfg.model.net, data=data)
    own = getattr(net, "optimizer_parameters", None)  # absent in code before issue 21 (--src)
    params = own() if callable(own) else list(net.parameters())
    opt = instantiate(cfg.model.optimizer)(params=params)
    return net, opt


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def with_floor(res: dict, cost: dict, peaks: dict, n_blocks: int) -> dict:
    from xfvae_floor import floor_seconds

    floor = floor_seconds(cost, peaks)
    res["floor"] = {
        "flops_per_block": cost["flops"],
        "bytes_per_block": cost["bytes"],
        "seconds_per_block": floor,
        "seconds_per_epoch": floor * n_blocks,
        "peaks": peaks,
    }
    if "seconds_per_block" in res:
        res["floor"]["times_floor"] = res["seconds_per_block"] / floor
    return res


def timed_blocks(data, block, max_blocks, overrides=(), device="cpu", peaks=None) -> dict:
    """Algorithm 1 for one epoch (or its first ``max_blocks`` blocks) on ``data``, no loop."""
    import torch

    from xfvae.data.batches import BlockPlan, epoch_generator, iter_blocks

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # parameters built on the device: no CPU copy of the latent weights
        net, opt = default_net_and_optimizer(data, block, overrides)
    net.to(device)
    plan = BlockPlan(data, block[0], block[1], seed=0)
    plan.on(device)
    setup = time.perf_counter() - t0
    net.on_fit_start()
    t0 = time.perf_counter()
    net.on_train_epoch_start(0)
    n, t_blocks, cpu_blocks = 0, time.perf_counter(), time.process_time()
    for b in iter_blocks(plan, epoch_generator(0, 0), shuffle=True):
        out = net.loss(b.to(device))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        n += 1
        if max_blocks is not None and n >= max_blocks:
            break
    sync(device)
    block_seconds = time.perf_counter() - t_blocks
    cpu_seconds = time.process_time() - cpu_blocks
    n_blocks = plan.n_ub * plan.n_ib
    res = {
        "overrides": list(overrides),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_ratings": data.n_ratings,
        "block_size": block,
        "blocks_per_epoch": n_blocks,
        "blocks_run": n,
        "seconds_per_block": block_seconds / n,
        "cpu_seconds_per_block": cpu_seconds / n,  # process CPU time: less sensitive to load
        "setup_seconds": setup,
        "attention": net.attention,
        "n_params": sum(p.numel() for p in net.parameters()),
    }
    if max_blocks is None:
        t_end = time.perf_counter()
        net.on_train_epoch_end(0)  # Algorithm 1 step 15 (resample U, V) belongs to the epoch
        sync(device)
        res["resample_seconds"] = time.perf_counter() - t_end
        res["seconds_per_epoch"] = time.perf_counter() - t0
    else:
        res["projected_epoch_seconds"] = res["seconds_per_block"] * n_blocks
    return with_floor(res, net_block_cost(net, data, block), peaks, n_blocks)


def net_block_cost(net, data, block: list[int]) -> dict:
    """``xfvae_floor.block_cost`` of one (B_U x B_V) block of ``net`` on ``data``."""
    from xfvae_floor import block_cost

    enc = net.user_encoder
    width = enc.first * (2 if enc.separate_variance else 1)
    return block_cost(
        data.n_users, data.n_items, data.n_ratings, *block, net.dim, width, net.attention
    )


def cpu_clock():
    """A callback that records the process CPU time of each epoch's training part."""
    import pytorch_lightning as pl

    class CpuClock(pl.Callback):
        def __init__(self):
            self.seconds, self.start = [], None

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.process_time()

        def on_validation_epoch_start(self, trainer, pl_module):
            if trainer.training and self.start is not None:
                self.seconds.append(time.process_time() - self.start)
                self.start = None

    return CpuClock()


def loop_worker(overrides: list[str], epochs: int, device: str, peaks: dict) -> dict:
    """``python -m xfvae.train <overrides>`` for ``epochs`` epochs, in this process."""
    import pandas as pd
    from omegaconf import open_dict
    from xfvae_floor import block_cost

    from xfvae.train import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            [
                "seed=0",
                "logger=none",
                "callbacks=none",
                "evaluation.test=false",
                f"trainer.max_epochs={epochs}",
                "trainer.enable_progress_bar=false",
                *(["trainer=gpu"] if device.startswith("cuda") else []),
                *overrides,
            ]
        )
        with open_dict(cfg):
            cfg.paths.output_dir = tmp
        t0, clock = time.perf_counter(), cpu_clock()
        metrics = train(cfg, callbacks=[clock])
        wall = time.perf_counter() - t0
        history = pd.read_csv(Path(tmp) / "history.csv")
    seconds = history["seconds"].tolist()
    steady = seconds[1:] if len(seconds) > 1 else seconds  # the first epoch builds caches
    res = {
        "overrides": overrides,
        "epochs": epochs,
        "wall_seconds": wall,
        "epoch_seconds": seconds,
        "seconds_per_epoch": statistics.median(steady),
        "cpu_epoch_seconds": clock.seconds,  # process CPU time (all threads) of the same parts
        "val_rmse_after": metrics["val/rmse"],
        "n_params": metrics["n_params"],
        "n_users": metrics["data/n_users"],
        "n_items": metrics["data/n_items"],
    }
    if cfg.model.name.startswith("xfvae"):
        b_u, b_v = cfg.model.batch_size
        n_train = int(metrics["data/n_ratings"] * cfg.data.split.train_frac)
        n_blocks = math.ceil(res["n_users"] / b_u) * math.ceil(res["n_items"] / b_v)
        res["blocks_per_epoch"] = n_blocks
        res["seconds_per_block"] = res["seconds_per_epoch"] / n_blocks
        cpu = clock.seconds[1:] if len(clock.seconds) > 1 else clock.seconds
        res["cpu_seconds_per_block"] = statistics.median(cpu) / n_blocks if cpu else None
        net = cfg.model.net
        width = net.inter_dim if net.input_layers == 0 else net.input_width
        attention = net.attention if net.attention != "auto" else "local"  # ML shapes: dense
        cost = block_cost(
            res["n_users"], res["n_items"], n_train, b_u, b_v, net.dim, width, attention
        )
        res = with_floor(res, cost, peaks, n_blocks)
    return res


def worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    spec = json.loads(a.spec)
    import torch
    from xfvae_floor import device_peaks

    torch.set_num_threads(a.threads)
    device = spec.get("device", "cpu")
    peaks = device_peaks(device)
    if spec["kind"] == "loop":
        res = loop_worker(spec["overrides"], spec["epochs"], device, peaks)
    else:
        t0 = time.perf_counter()
        data = synthetic_train_data(spec["n_ratings"], spec["n_users"], spec["n_items"])
        _ = data.csr, data.csr_t
        res = {"data_seconds": time.perf_counter() - t0, "runs": []}
        for mode in spec.get("attention", [None]):  # same data for every mode; RSS cumulative
            over = () if mode is None else (f"model.net.attention={mode}",)
            run = timed_blocks(data, spec["block"], spec.get("max_blocks"), over, device, peaks)
            res["runs"].append({**run, "peak_rss_mb_so_far": round(peak_rss_mb(), 1)})
        if len(res["runs"]) == 1:
            res.update(res.pop("runs")[0])
    res.update(
        threads=torch.get_num_threads(),
        peak_rss_mb=round(peak_rss_mb(), 1),
        load_avg=load(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(default)"),
    )
    if device.startswith("cuda"):
        res.update(
            device_name=torch.cuda.get_device_name(),
            peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
        )
    print(json.dumps(res))


# ----- parts ---------------------------------------------------------------------------------------
def part_ml100k(device: str, threads: list[int], epochs: int) -> dict:
    """Default config on ML-100K (B_U = B_V = 100, 170 blocks) through the real loop."""
    out = {}
    for t in threads:
        for name, extra in (("plain", []), ("ema", EMA)):
            spec = {
                "kind": "loop",
                "device": device,
                "epochs": epochs,
                "overrides": ["model=xfvae", "data=ml-100k", *extra],
            }
            out[f"threads_{t}_{name}"] = res = child(spec, t)
            print(json.dumps({f"threads_{t}_{name}": res}), flush=True)
    return out


def part_scaling(device: str, threads: int) -> dict:
    """0.5, 1, 2, 4 M ratings; users:items = 5:1 and density 2% fixed (so I, J grow as sqrt(n);
    attention=auto resolves to local), with the block grid fixed at 10 x 10 (B_U = I/10,
    B_V = J/10: the paper enlarges the batch sizes with the data set, 4.2). Linear scaling means
    seconds/epoch proportional to n."""
    runs = []
    for n in (500_000, 1_000_000, 2_000_000, 4_000_000):
        n_items = int(round(math.sqrt(n / 0.02 / 5)))
        n_users = 5 * n_items
        block = [math.ceil(n_users / 10), math.ceil(n_items / 10)]
        spec = {"kind": "blocks", "device": device, "n_ratings": n, "n_users": n_users}
        spec.update(n_items=n_items, block=block)
        runs.append(child(spec, threads))
        print(json.dumps(runs[-1]), flush=True)
    base = runs[0]
    for r in runs:
        if "seconds_per_epoch" in r and "seconds_per_epoch" in base:
            r["ratings_ratio"] = r["n_ratings"] / base["n_ratings"]
            r["time_ratio"] = r["seconds_per_epoch"] / base["seconds_per_epoch"]
    for prev, r in zip(runs, runs[1:], strict=False):
        if "seconds_per_epoch" in r and "seconds_per_epoch" in prev:
            r["doubling_ratio"] = r["seconds_per_epoch"] / prev["seconds_per_epoch"]
    return {"runs": runs}


def part_paperrule(device: str, threads: int, shapes: list[str], extra: list[str]) -> dict:
    """``data=synthetic`` from ML-100K's shape to ML-1M's with B_U = B_V = 100 (the paper's rule
    for these sizes), cross-feedback VAE next to VAE-CF, both through train()."""
    out = []
    for name, n_users, n_items, density in PAPER_SHAPES:
        if shapes and name not in shapes:
            continue
        data = [
            "data=synthetic",
            f"data.options.n_users={n_users}",
            f"data.options.n_items={n_items}",
            f"data.options.density={density}",
        ]
        row = {"shape": name, "n_users": n_users, "n_items": n_items, "density": density}
        for model, epochs in (("xfvae", 2), ("vaecf", 3)):
            over = [f"model={model}", *data, *(extra if model == "xfvae" else [])]
            spec = {"kind": "loop", "device": device, "epochs": epochs, "overrides": over}
            row[model] = child(spec, threads)
        x, v = row["xfvae"], row["vaecf"]
        if "seconds_per_epoch" in x and "seconds_per_epoch" in v:
            row["ratio_to_vaecf"] = x["seconds_per_epoch"] / v["seconds_per_epoch"]
        out.append(row)
        print(json.dumps(row), flush=True)
    return {"shapes": out}


def part_speedbar(device: str, threads: int, epochs: int) -> dict:
    """Seconds per epoch of the cross-feedback VAE and of VAE-CF on ML-100K through the loop
    (defaults, seed 0, the same call): the ratio is the speed bar (issue 21: at most 4x)."""
    out = {}
    for model in ("xfvae", "vaecf"):
        spec = {"kind": "loop", "device": device, "epochs": epochs}
        spec["overrides"] = [f"model={model}", "data=ml-100k"]
        out[model] = child(spec, threads)
        print(json.dumps({model: out[model]}), flush=True)
    x, v = out["xfvae"], out["vaecf"]
    if "seconds_per_epoch" in x and "seconds_per_epoch" in v:
        out["ratio_to_vaecf"] = x["seconds_per_epoch"] / v["seconds_per_epoch"]
    return out


def part_ml20m(device: str, threads: int, max_blocks: int) -> dict:
    """ML-20M shape (138,493 x 26,744, 20 M ratings), B_U = B_V = 1000 (paper 4.2), bounded blocks.

    The default resolves to global attention there (density 0.5%); local and none are timed on
    the same data to show what the B x N global attention costs."""
    spec = {
        "kind": "blocks",
        "device": device,
        "n_ratings": 20_000_000,
        "n_users": 138_493,
        "n_items": 26_744,
        "block": [1000, 1000],
        "max_blocks": max_blocks,
        "attention": ["global", "local", "none"],
    }
    return child(spec, threads)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        sys.path.insert(0, str(HERE))
        worker(sys.argv[2:])
        return
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("part", choices=["ml100k", "scaling", "paperrule", "ml20m", "speedbar"])
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--epochs", type=int, default=4, help="ml100k, speedbar: epochs per run")
    p.add_argument("--max-blocks", type=int, default=8)
    p.add_argument("--shapes", nargs="*", default=[], help="paperrule: a subset of the shapes")
    p.add_argument("--xfvae", nargs="*", default=[], help="paperrule: overrides for xfvae")
    p.add_argument("--device", default="cpu", help="cpu | cuda (results file gets a _cuda suffix)")
    p.add_argument("--tag", default="", help="suffix of the results file")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from xfvae.runs.atomic import atomic_write_json
    from xfvae.runs.provenance import git_commit, machine

    started, t = load(), a.threads[0]
    if a.part == "ml100k":
        res = part_ml100k(a.device, a.threads, a.epochs)
    elif a.part == "scaling":
        res = part_scaling(a.device, t)
    elif a.part == "speedbar":
        res = part_speedbar(a.device, t, a.epochs)
    elif a.part == "paperrule":
        res = part_paperrule(a.device, t, a.shapes, a.xfvae)
    else:
        res = part_ml20m(a.device, t, a.max_blocks)
    out = {
        "part": a.part,
        "load_avg_start": started,
        "load_avg_end": load(),
        "cpu_count": os.cpu_count(),
        "device": a.device,
        "commit": git_commit(),  # of the tree ``xfvae`` was imported from ("unknown" outside git)
        "xfvae_src": str(Path(sys.modules["xfvae"].__file__).parent),
        "machine": machine(),
        "result": res,
    }
    suffix = ("" if a.device == "cpu" else "_" + a.device.split(":")[0]) + (
        f"_{a.tag}" if a.tag else ""
    )
    path = atomic_write_json(RESULTS / f"bench_xfvae_{a.part}{suffix}.json", out)
    print(json.dumps(out, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
