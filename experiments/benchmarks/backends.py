#!/usr/bin/env python3
"""Burn on Flex, Burn on LibTorch and plain PyTorch 2.9.0 on the same three programs, in
one run on one machine, each pinned to one core with one intra-op thread: time per step
and the ratio to PyTorch.

- mlp: one Adam step of a 64-256-256-10 ReLU MLP on a batch of 64 (forward,
  cross-entropy, backward, update);
- tile (float32, float64): one full-batch step of a fractal tile, SIDE^2 networks
  16->16->1 with tanh(sqrt(2) z) on 272 rows and hand-written gradients, per
  network-step;
- pinn: one METALIC PINN step at the reference size (two [2, 20, 20, 1] tanh networks,
  100 boundary, 1000 collocation, 101 interface points per subdomain; advection with
  beta = 10; solution-average and residual-continuity interface terms): loss and
  parameter gradient. Tessera propagates input derivatives forward (jets) and takes one
  first-order backward; PyTorch takes the input derivatives with autograd
  (create_graph=True) and then the parameter gradient through them (double backward),
  as the reference code does.

Tessera's side is the `backends` bench binary (built with `--features tch`), run under
`taskset -c 0`; PyTorch runs in this process, pinned the same way.

Usage (from the repository root; .venv-bench carries torch==2.9.0, see fractal_tile.py):
  bash tests/libtorch.sh && export LIBTORCH=$PWD/.libtorch/libtorch
  cargo bench --profile dev --workspace --features tessera-orchestrator/tch --bench backends --no-run
  .venv-bench/bin/python experiments/benchmarks/backends.py --bench target/debug/deps/backends-HASH
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import time


def timed(fn, repeats):
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def torch_mlp(torch, repeats):
    """Milliseconds per step: the whole Adam step, and forward plus backward alone."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()

    def forward_backward():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        loss.item()
    return timed(step, repeats), timed(forward_backward, repeats)


def torch_tile(torch, side, dtype, repeats):
    n, w, rows, steps = 16, 16, 272, 10
    p = side * side
    g = torch.Generator().manual_seed(3)
    w0_init = torch.randn(w, n, generator=g, dtype=dtype).repeat(p, 1)
    w1_init = torch.randn(1, w, generator=g, dtype=dtype).repeat(p, 1)
    x = torch.randn(rows, n, generator=g, dtype=dtype)
    t = torch.randn(1, rows, generator=g, dtype=dtype)
    at = [10 ** (-1 + 4 * k / (side - 1)) for k in range(side)]
    lr0 = torch.tensor([at[i % side] for i in range(p) for _ in range(w)], dtype=dtype).reshape(p * w, 1)
    lr1 = torch.tensor([at[i // side] for i in range(p)], dtype=dtype).reshape(p, 1)
    scale, s2 = 1 / math.sqrt(n), math.sqrt(2)

    def run():
        w0, w1 = w0_init.clone(), w1_init.clone()
        losses = []
        for _ in range(steps):
            pre = (w0 @ x.T * scale).reshape(p, w, rows)
            th = torch.tanh(pre * s2)
            deriv = (1 - th * th) * s2
            err = (w1.reshape(p, 1, w) @ th).reshape(p, rows) / w - t
            losses.append((err * err).mean(1))
            dy = err * (2 / rows)
            dw1 = (dy.reshape(p, 1, rows) @ th.transpose(1, 2)).reshape(p, w) / w
            dz = w1.reshape(p, w, 1) * dy.reshape(p, 1, rows) * deriv * (scale / w)
            dw0 = dz.reshape(p * w, rows) @ x
            w0 = w0 - lr0 * dw0
            w1 = w1 - lr1 * dw1
        torch.stack(losses).sum().item()
    return timed(run, max(3, repeats // 5)) / (steps * p)


def torch_pinn(torch, repeats):
    """The reference's loss (get_loss_xcgpinn) for advection with the average-solution and
    residual-continuity terms, with autograd input derivatives."""
    torch.manual_seed(1)
    beta, two_pi = 10.0, 2 * math.pi

    def net():
        layers = [torch.nn.Linear(2, 20), torch.nn.Tanh(), torch.nn.Linear(20, 20),
                  torch.nn.Tanh(), torch.nn.Linear(20, 1)]
        for m in layers:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_normal_(m.weight)
        return torch.nn.Sequential(*layers)
    nets = [net(), net()]
    lo_hi = [((0.0, 0.0), (two_pi, 0.49)), ((0.0, 0.51), (two_pi, 1.0))]

    def scaled(k, pts):
        (lx, lt), (ux, ut) = lo_hi[k]
        lo, hi = torch.tensor([lx, lt]), torch.tensor([ux, ut])
        return 2 * (pts - lo) / (hi - lo) - 1

    def pts(k, count):
        t0, t1 = (0.01, 0.49) if k == 0 else (0.51, 0.99)
        return torch.stack([torch.rand(count) * (two_pi - 0.02) + 0.01,
                            torch.rand(count) * (t1 - t0) + t0], 1)
    bnd = [pts(k, 100) for k in range(2)]
    g = [torch.sin(b[:, 0] - beta * b[:, 1]).unsqueeze(1) for b in bnd]
    col = [pts(k, 1000).requires_grad_(True) for k in range(2)]
    itf = torch.stack([torch.linspace(0, two_pi, 101), torch.full((101,), 0.5)], 1).requires_grad_(True)

    def residual(k, z):
        u = nets[k](scaled(k, z))
        du = torch.autograd.grad(u, z, torch.ones_like(u), create_graph=True)[0]
        return u, du[:, 1:2] + beta * du[:, 0:1]
    params = [p for n_ in nets for p in n_.parameters()]

    def step():
        loss = 0
        for k in range(2):
            loss = loss + 20 * ((nets[k](scaled(k, bnd[k])) - g[k]) ** 2).mean()
            _, f = residual(k, col[k])
            loss = loss + (f ** 2).mean()
        u1, f1 = residual(0, itf)
        u2, f2 = residual(1, itf)
        avg = (u1 + u2) / 2
        loss = loss + 5 * (((u1 - avg) ** 2).mean() + ((u2 - avg) ** 2).mean() + ((f1 - f2) ** 2).mean())
        grads = torch.autograd.grad(loss, params)
        sum(float(gr.sum()) for gr in grads)
    return timed(step, repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True, help="the `backends` bench binary")
    ap.add_argument("--side", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("LD_LIBRARY_PATH", None)
    rust = json.loads(subprocess.run(
        ["taskset", "-c", "0", args.bench, "--side", str(args.side), "--repeats", str(args.repeats)],
        check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1])
    os.sched_setaffinity(0, {0})
    import torch
    torch.set_num_threads(1)
    mlp, mlp_fwd_bwd = torch_mlp(torch, args.repeats)
    py = {
        "mlp_ms": mlp,
        "mlp_fwd_bwd_ms": mlp_fwd_bwd,
        "tile_f32_ms": torch_tile(torch, args.side, torch.float32, args.repeats),
        "tile_f64_ms": torch_tile(torch, args.side, torch.float64, args.repeats),
        "pinn_ms": torch_pinn(torch, args.repeats),
    }
    names = {"mlp_ms": "MLP 64-256-256-10 Adam step, batch 64 (ms)",
             "mlp_fwd_bwd_ms": "  of which forward + backward (ms)",
             "tile_f32_ms": f"fractal tile, {args.side}² networks, float32 (µs per network-step)",
             "tile_f64_ms": f"fractal tile, {args.side}² networks, float64 (µs per network-step)",
             "pinn_ms": "METALIC PINN step, reference size (ms)"}
    print(f"torch {torch.__version__}, one core, one thread; medians of {args.repeats}")
    print(f"{'program':<58} {'flex':>9} {'libtorch':>9} {'pytorch':>9} {'libtorch/pt':>12} {'flex/pt':>8}")
    for k, label in names.items():
        unit = 1e3 if k.startswith("tile") else 1.0
        f, t, p = rust["flex"][k] * unit, rust["libtorch"][k] * unit, py[k] * unit
        print(f"{label:<58} {f:>9.3f} {t:>9.3f} {p:>9.3f} {t / p:>12.2f} {f / p:>8.2f}")
    print(json.dumps({"tessera": rust, "pytorch": py}))


if __name__ == "__main__":
    main()
