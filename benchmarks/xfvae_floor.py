"""A floor for one block of the cross-feedback VAE: its arithmetic and memory traffic divided by
the device's peak rates (used by bench_xfvae.py; not part of the test suite).

``block_cost`` counts, for one training step (forward, backward and a dense Adam update, fp32),
the floating-point operations and the bytes that any implementation of the same computation must
move at least once: the first-layer tables read (forward) and their gradients written (backward),
the block's sparse rows, the global attention's keys, and Adam's reads (parameter, gradient, two
moments) and writes (parameter, two moments). Caches and re-reads are ignored, so the floor is
optimistic; the distance to it is what the benchmark reports.

``device_peaks`` measures the CPU's peak rates with the benchmark's thread count (a large matrix
product, a large copy) and takes a GPU's from its data sheet (fp32 without tensor cores).
"""

from __future__ import annotations

import time

#: name fragment -> (fp32 FLOP/s, memory bytes/s), data sheets (SXM parts, no tensor cores)
GPU_PEAKS = {"H100": (67e12, 3.35e12), "H200": (67e12, 4.8e12), "A100": (19.5e12, 2.0e12)}


def device_peaks(device: str = "cpu") -> dict:
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        for key, (flops, bw) in GPU_PEAKS.items():
            if key in name:
                return {"device": name, "peak_flops": flops, "peak_bytes_per_s": bw, "src": "sheet"}
        return {"device": name, "peak_flops": float("nan"), "peak_bytes_per_s": float("nan")}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, y = torch.empty(32 << 20), torch.randn(32 << 20)  # 128 MB each
    best_mm = best_copy = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(a, b)
        best_mm = min(best_mm, time.perf_counter() - t)
        t = time.perf_counter()
        x.copy_(y)
        best_copy = min(best_copy, time.perf_counter() - t)
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "peak_flops": 2 * 2048**3 / best_mm,
        "peak_bytes_per_s": 2 * x.numel() * 4 / best_copy,  # read + write
        "src": "measured (sgemm 2048^3, 128 MB copy)",
    }


def side_cost(
    n_rows: int, n_cols: int, n_ratings: int, batch: int, dim: int, width: int, attention: str
) -> tuple[float, float]:
    """FLOPs and bytes of one side's encoder for one batch (forward + backward)."""
    entries = batch * n_ratings / max(1, n_rows)  # the batch's rows' ratings
    q = 2  # attention queries: mean and variance
    fwd = 2 * entries * width * 2  # X W_0 and Z Phi_0 as bag sums
    fwd += 2 * n_cols * dim * width  # P = v_j^T Phi_0[j] for all columns
    fwd += 2 * batch * (2 * width) * (2 * dim)  # the two heads
    table_bytes = 4 * n_cols * (dim + 1) * width  # W_0 and Phi_0
    bytes_ = 2 * table_bytes + entries * 20  # read the tables, write their gradients; the rows
    if attention == "local":
        fwd += entries * q * (4 * dim + 6)
    elif attention == "global":
        fwd += batch * q * n_cols * (4 * dim + 3)
        bytes_ += 3 * 4 * n_cols * dim * max(1, batch * q // 128)  # keys per block of queries
    return 3 * fwd, bytes_  # backward: about twice the forward


def block_cost(
    n_users: int,
    n_items: int,
    n_ratings: int,
    b_u: int,
    b_v: int,
    dim: int = 10,
    width: int = 25,
    attention: str = "local",
) -> dict:
    """FLOPs and bytes of one training step (one block) with a dense Adam update."""
    fu, bu = side_cost(n_users, n_items, n_ratings, b_u, dim, width, attention)
    fi, bi = side_cost(n_items, n_users, n_ratings, b_v, dim, width, attention)
    params = (n_users + n_items) * (dim + 1) * width
    flops = fu + fi + 12 * params
    bytes_ = bu + bi + 7 * 4 * params
    return {"flops": flops, "bytes": bytes_, "params_first_layers": params}


def floor_seconds(cost: dict, peaks: dict) -> float:
    return max(cost["flops"] / peaks["peak_flops"], cost["bytes"] / peaks["peak_bytes_per_s"])
