"""Speed and memory of the cross-feedback VAE (issue 3). Not part of the test suite; never asserts.

    python benchmarks/bench_xfvae.py ml100k    # default config through the real loop, 1 and 2 threads
    python benchmarks/bench_xfvae.py scaling   # synthetic 0.5/1/2/4 M ratings, seconds per epoch
    python benchmarks/bench_xfvae.py ml20m     # ML-20M-shaped synthetic: s/block, projected epoch, RSS

Each case runs in a fresh subprocess (so peak RSS is its own) and the results go to
``benchmarks/results/bench_xfvae_<part>.json`` (atomically) and stdout. The machine's load
average is recorded with every number, because timings on a shared machine move with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(args: list[str], threads: int) -> dict:
    """Run this script's worker mode in a subprocess with ``threads`` torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "_worker", *args, "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:], "args": args}
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


def default_net_and_optimizer(data, block: list[int], overrides: tuple[str, ...] = ()):
    """The committed conf/model/xfvae.yaml (plus ``overrides``), instantiated as the loop does."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from xfvae import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = ["model=xfvae", f"model.batch_size=[{block[0]},{block[1]}]"]
        cfg = compose("train", overrides=base + list(overrides))
    net = instantiate(cfg.model.net, data=data)
    opt = instantiate(cfg.model.optimizer)(params=list(net.parameters()))
    return net, opt


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_blocks(
    data,
    block: list[int],
    max_blocks: int | None,
    overrides: tuple[str, ...] = (),
    device: str = "cpu",
) -> dict:
    """Algorithm 1 for one epoch (or its first ``max_blocks`` blocks) on ``data``."""
    import torch

    from xfvae.data.batches import BlockPlan, epoch_generator, iter_blocks

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # parameters built on the device: no CPU copy of the latent weights
        net, opt = default_net_and_optimizer(data, block, overrides)
    net.to(device)
    plan = BlockPlan(data, block[0], block[1], seed=0)
    setup = time.perf_counter() - t0
    net.on_fit_start()
    t0 = time.perf_counter()
    net.on_train_epoch_start(0)
    n, t_blocks = 0, time.perf_counter()
    for b in iter_blocks(plan, epoch_generator(0, 0), shuffle=True):
        b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
        out = net.loss(b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        n += 1
        if max_blocks is not None and n >= max_blocks:
            break
    sync(device)
    block_seconds = time.perf_counter() - t_blocks
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
    return res


def worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["loop", "blocks"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-ratings", type=int, default=0)
    p.add_argument("--n-users", type=int, default=0)
    p.add_argument("--n-items", type=int, default=0)
    p.add_argument("--block", type=int, nargs=2, default=[100, 100])
    p.add_argument("--max-blocks", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--attention", nargs="+", default=[None], help="attention modes, run in turn")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.kind == "loop":
        res = loop_worker(a.epochs, a.device)
    else:
        t0 = time.perf_counter()
        data = synthetic_train_data(a.n_ratings, a.n_users, a.n_items)
        _ = data.csr, data.csr_t
        res = {"data_seconds": time.perf_counter() - t0, "runs": []}
        for mode in a.attention:  # same data for every mode; peak RSS is cumulative
            over = () if mode is None else (f"model.net.attention={mode}",)
            res["runs"].append(timed_blocks(data, a.block, a.max_blocks, over, a.device))
            res["runs"][-1]["peak_rss_mb_so_far"] = round(peak_rss_mb(), 1)
        if len(res["runs"]) == 1:
            res.update(res.pop("runs")[0])
    res.update(
        threads=torch.get_num_threads(), peak_rss_mb=round(peak_rss_mb(), 1), load_avg=load()
    )
    if a.device.startswith("cuda"):
        res.update(
            device_name=torch.cuda.get_device_name(),
            peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
        )
    print(json.dumps(res))


def loop_worker(epochs: int, device: str = "cpu") -> dict:
    """``python -m xfvae.train model=xfvae data=ml-100k`` for a few epochs, in this process."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from xfvae import CONF_DIR
    from xfvae.train import train

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "model=xfvae",
            "data=ml-100k",
            "seed=0",
            "logger=none",
            "callbacks=none",
            f"trainer.max_epochs={epochs}",
            "trainer.enable_progress_bar=false",
            *(["trainer=gpu"] if device.startswith("cuda") else []),
        ]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = tmp
        t0 = time.perf_counter()
        metrics = train(cfg)
        wall = time.perf_counter() - t0
        hist = json.loads(json.dumps(metrics))
    return {
        "epochs": epochs,
        "wall_seconds": wall,
        "seconds_per_epoch_median": hist["seconds_per_epoch"],
        "val_rmse_after": hist["val/rmse"],
    }


# ----- parts ---------------------------------------------------------------------------------------
def part_ml100k(device: str = "cpu") -> dict:
    """Default config on ML-100K (B_U = B_V = 100) through the real training loop."""
    if device != "cpu":
        return {device: child(["loop", "--epochs", "4", "--device", device], 2)}
    return {f"threads_{t}": child(["loop", "--epochs", "4"], t) for t in (1, 2)}


def part_scaling(threads: int, device: str = "cpu") -> dict:
    """0.5, 1, 2, 4 M ratings; users:items = 5:1 and density 2% fixed (so I, J grow as sqrt(n);
    attention=auto resolves to local), with the block grid fixed at 10 x 10 (B_U = I/10,
    B_V = J/10: the paper enlarges the batch sizes with the data set, 4.2). Linear scaling means
    seconds/epoch proportional to n; with a fixed B instead, the number of blocks grows as n and
    each block's (I + J) K M latent-weight update as sqrt(n), i.e. n^1.5 by design of Algorithm 1."""
    runs = []
    for n in (500_000, 1_000_000, 2_000_000, 4_000_000):
        n_items = int(round(math.sqrt(n / 0.02 / 5)))
        n_users = 5 * n_items
        block = [math.ceil(n_users / 10), math.ceil(n_items / 10)]
        args = [
            "blocks",
            "--n-ratings",
            str(n),
            "--n-users",
            str(n_users),
            "--n-items",
            str(n_items),
            "--block",
            str(block[0]),
            str(block[1]),
            "--device",
            device,
        ]
        runs.append(child(args, threads))
        print(json.dumps(runs[-1]), flush=True)
    base = runs[0]
    for r in runs:
        if "seconds_per_epoch" in r and "seconds_per_epoch" in base:
            r["ratings_ratio"] = r["n_ratings"] / base["n_ratings"]
            r["time_ratio"] = r["seconds_per_epoch"] / base["seconds_per_epoch"]
    return {"runs": runs}


def part_ml20m(threads: int, max_blocks: int, device: str = "cpu") -> dict:
    """ML-20M shape (138,493 x 26,744, 20 M ratings), B_U = B_V = 1000 (paper 4.2), bounded blocks.

    The default resolves to global attention there (density 0.5%); local and none are timed on
    the same data to show what the B x N global attention costs."""
    args = [
        "blocks",
        "--n-ratings",
        "20000000",
        "--n-users",
        "138493",
        "--n-items",
        "26744",
        "--block",
        "1000",
        "1000",
        "--max-blocks",
        str(max_blocks),
        "--attention",
        "global",
        "local",
        "none",
        "--device",
        device,
    ]
    return child(args, threads)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(sys.argv[2:])
        return
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("part", choices=["ml100k", "scaling", "ml20m"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-blocks", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu | cuda (results file gets a _cuda suffix)")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from xfvae.io import atomic_write_json

    started = load()
    if a.part == "ml100k":
        res = part_ml100k(a.device)
    elif a.part == "scaling":
        res = part_scaling(a.threads, a.device)
    else:
        res = part_ml20m(a.threads, a.max_blocks, a.device)
    out = {
        "part": a.part,
        "load_avg_start": started,
        "load_avg_end": load(),
        "cpu_count": os.cpu_count(),
        "device": a.device,
        "result": res,
    }
    suffix = "" if a.device == "cpu" else "_" + a.device.split(":")[0]
    path = atomic_write_json(RESULTS / f"bench_xfvae_{a.part}{suffix}.json", out)
    print(json.dumps(out, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
