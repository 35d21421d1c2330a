"""What one small operator call costs on this machine, called from Python, from TorchScript, and as
``torch.profiler`` reports it (issue 21, session 13). Not a test; one thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attempts/dispatch_cost.py --tag s13

The loop is the scratch loop of session 12's note: ``x = torch.addmm(x, x, w).clamp_min(0)`` on a
20 x 10 ``x``, 100 times (200 calls), repeated. Three readings per call, each the best of
``--rounds`` rounds:

* ``eager_us``: the loop in Python (PyTorch's eager mode, as the block step runs);
* ``script_us``: the same function under ``torch.jit.script`` (the interpreter is C++, the
  operators are the same ATen kernels): roughly what calling the same kernels from C++ costs;
* ``profiled_aten_self_us``: the self CPU time ``torch.profiler`` gives the ``aten::`` operators of
  the eager loop, per call. If it is as large as ``eager_us``, the profiler's per-operator times
  cannot bound what the kernels cost without Python.

Results: ``benchmarks/results/dispatch_cost_<tag>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "src"))

import torch  # noqa: E402

LOOP, REPEATS = 100, 200  # 200 calls per loop, loops per round


def chain(x: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        x = torch.addmm(x, x, w).clamp_min(0)
    return x


def per_call_us(fn, x, w, rounds: int) -> float:
    for _ in range(5):
        fn(x, w, LOOP)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(REPEATS):
            fn(x, w, LOOP)
        best = min(best, time.perf_counter() - t)
    return 1e6 * best / (REPEATS * 2 * LOOP)


def profiled_aten_self_us(x, w) -> float:
    from torch.profiler import profile

    chain(x, w, LOOP)
    with profile() as prof:
        for _ in range(REPEATS):
            chain(x, w, LOOP)
    aten = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::"))
    return aten / (REPEATS * 2 * LOOP)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    from xfvae.runs.atomic import atomic_write_json
    from xfvae.runs.provenance import git_commit, machine

    torch.set_num_threads(1)
    x, w = torch.randn(20, 10), torch.randn(10, 10) * 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scripted = torch.jit.script(chain)
    res = {
        "commit": git_commit(),
        "machine": machine(),
        "calls_per_loop": 2 * LOOP,
        "eager_us": per_call_us(chain, x, w, a.rounds),
        "script_us": per_call_us(scripted, x, w, a.rounds),
        "profiled_aten_self_us": profiled_aten_self_us(x, w),
        "torch_jit_script_warnings": sorted({str(c.message)[:200] for c in caught}),
    }
    path = HERE.parent / "results" / f"dispatch_cost{'_' + a.tag if a.tag else ''}.json"
    atomic_write_json(path, res)
    print({k: v for k, v in res.items() if k != "machine"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
