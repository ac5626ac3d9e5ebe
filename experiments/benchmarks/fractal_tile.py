#!/usr/bin/env python3
"""Fractal tile throughput: Tessera's tile program against the reference method (JAX
`jit(vmap(...))` of a training loop, as in Sohl-Dickstein's notebook) and PyTorch
(batched `bmm` with autograd over stacked weights), in one run on one machine, in
network-steps per second (one network trained one full-batch step).

Every contender trains the same tile: SIDE x SIDE grid points (per-layer learning rates
10^-1..10^3 on both axes), n = 16 inputs, hidden width 16, tanh(sqrt(2) z), 272 data
points, STEPS full-batch gradient-descent steps, float64 and float32. Each runs pinned to
one core (`taskset -c 0`, one intra-op thread) so that the figures compare kernels, not
thread pools; compile/warm-up time is excluded and reported separately. The sign of
every point's value (trainable or not) is compared between contenders.

Tessera: the `fractal_tile` bench binary (`--json`), i.e. the fused CPU kernel the
`fractal-tile` program runs, and the generic Burn tensor program on the Flex backend. It
runs first and writes the weights and data it drew; JAX and PyTorch train exactly those,
so the sign agreement compares the same networks.

Usage (from the repository root):
  python3 -m venv .venv-bench && .venv-bench/bin/pip install "jax[cpu]" torch==2.9.0
  .venv-bench/bin/python experiments/benchmarks/fractal_tile.py --side 64 --steps 500
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

N, WIDTH, ROWS = 16, 16, 272
LO, HI = -1.0, 3.0


def problem(np):
    """The weights and data Tessera's bench drew (W0 is width x n, X is rows x n), so that
    every contender trains exactly the same networks."""
    p = json.load(open(os.environ["FRACTAL_PROBLEM"]))
    return (np.array(p["w0"]).reshape(WIDTH, N), np.array(p["w1"]),
            np.array(p["x"]).reshape(ROWS, N), np.array(p["t"]))


def grid(np, side):
    axis = 10.0 ** np.linspace(LO, HI, side)
    lr0, lr1 = np.meshgrid(axis, axis)  # row-major: y (output layer) by row
    return lr0.ravel(), lr1.ravel()


def values(np, losses):
    """The paper's per-point value from a (P, steps) loss array (negative: trainable)."""
    v = losses / losses[:, :1]
    v = np.where(np.isfinite(v), np.clip(v, 0.0, 1e6), 1e6)
    converged = v[:, -20:].mean(axis=1) < 1.0
    return np.where(converged, -v.sum(axis=1), (1.0 / np.maximum(v, 1e-6)).sum(axis=1))


def run_jax(side, steps, dtype_name):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    dtype = jnp.float64 if dtype_name == "f64" else jnp.float32
    w0, w1, x, t = [jnp.asarray(a, dtype) for a in problem(np)]
    lr0, lr1 = [jnp.asarray(a, dtype) for a in grid(np, side)]

    def loss_fn(params):
        a, b = params
        h = jnp.tanh(jnp.sqrt(2.0).astype(dtype) * (x @ a.T) / jnp.sqrt(N).astype(dtype))
        y = h @ b / WIDTH
        return jnp.mean((y - t) ** 2)

    def train(l0, l1):
        def step(params, _):
            loss, (g0, g1) = jax.value_and_grad(loss_fn)(params)
            return (params[0] - l0 * g0, params[1] - l1 * g1), loss
        _, losses = jax.lax.scan(step, (w0, w1), None, length=steps)
        return losses

    t0 = time.perf_counter()
    f = jax.jit(jax.vmap(train)).lower(lr0, lr1).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = f(lr0, lr1).block_until_ready()
    secs = time.perf_counter() - t0
    return secs, compile_s, values(np, np.asarray(out, np.float64))


def run_torch(side, steps, dtype_name):
    import numpy as np
    import torch
    torch.set_num_threads(1)
    dtype = torch.float64 if dtype_name == "f64" else torch.float32
    w0, w1, x, t = [torch.tensor(a, dtype=dtype) for a in problem(np)]
    lr0, lr1 = [torch.tensor(a, dtype=dtype) for a in grid(np, side)]
    p = lr0.shape[0]
    t0 = time.perf_counter()
    a = w0.expand(p, WIDTH, N).clone().requires_grad_(True)
    b = w1.expand(p, WIDTH).clone().requires_grad_(True)
    xt = x.T.expand(p, N, ROWS)
    losses = torch.empty(p, steps, dtype=dtype)
    sqrt2, scale = 2.0 ** 0.5, N ** -0.5
    for s in range(steps):
        h = torch.tanh(sqrt2 * scale * torch.bmm(a, xt))  # (P, WIDTH, ROWS)
        y = torch.bmm(b.unsqueeze(1), h).squeeze(1) / WIDTH  # (P, ROWS)
        per_point = ((y - t) ** 2).mean(dim=1)
        g0, g1 = torch.autograd.grad(per_point.sum(), (a, b))
        with torch.no_grad():
            losses[:, s] = per_point
            a -= lr0[:, None, None] * g0
            b -= lr1[:, None] * g1
    secs = time.perf_counter() - t0
    return secs, 0.0, values(np, losses.detach().double().numpy())


def run_tessera(side, steps, binary, pin, env):
    out = subprocess.run(pin + [binary, "--side", str(side), "--steps", str(steps), "--json",
                                "--problem-out", env["FRACTAL_PROBLEM"]],
                         check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def child(args):
    """Runs one contender in this (pinned) process and prints one JSON line."""
    import numpy as np
    fn = {"jax": run_jax, "torch": run_torch}[args.child]
    secs, compile_s, vals = fn(args.side, args.steps, args.precision)
    print(json.dumps({"name": args.child, "precision": args.precision, "secs": secs,
                      "compile_s": compile_s, "net_steps": args.side ** 2 * args.steps,
                      "trainable": int((vals < 0).sum()),
                      "signs": "".join("1" if v < 0 else "0" for v in vals)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--bench", default=None,
                    help="the fractal_tile bench binary (default: built with cargo)")
    ap.add_argument("--child", choices=["jax", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="f64", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    binary = args.bench
    if binary is None:
        msg = subprocess.run(
            ["cargo", "bench", "--profile", "dev", "--workspace", "--bench", "fractal_tile",
             "--no-run", "--message-format", "json"],
            check=True, capture_output=True, text=True).stdout
        for line in msg.splitlines():
            m = json.loads(line)
            if m.get("reason") == "compiler-artifact" and m.get("executable") \
                    and m["target"]["name"] == "fractal_tile":
                binary = m["executable"]
    pin = ["taskset", "-c", "0"]
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false "
               "intra_op_parallelism_threads=1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               FRACTAL_PROBLEM=os.path.join(tempfile.mkdtemp(), "problem.json"))
    rows = list(run_tessera(args.side, args.steps, binary, pin, env))
    for name in ["jax", "torch"]:
        for precision in ["f64", "f32"]:
            out = subprocess.run(
                pin + [sys.executable, __file__, "--child", name, "--precision", precision,
                       "--side", str(args.side), "--steps", str(args.steps)],
                check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"tile {args.side}x{args.side}, {args.steps} steps, tanh, {N}->{WIDTH}->1, "
          f"{ROWS} points, one core each")
    ref = {r["precision"]: r for r in rows if r["name"] == "jax"}
    for r in rows:
        rate = r["net_steps"] / r["secs"]
        j = ref[r["precision"]]
        jrate = j["net_steps"] / j["secs"]
        agree = sum(a == b for a, b in zip(r["signs"], j["signs"])) / len(j["signs"])
        extra = f", compile {r['compile_s']:.1f} s" if r.get("compile_s") else ""
        print(f"{r['name']:>16} {r['precision']}: {rate:>10.0f} network-steps/s "
              f"({r['secs']:.2f} s{extra}), {rate / jrate:5.2f}x JAX, "
              f"sign agreement with JAX {100 * agree:.2f}%")


if __name__ == "__main__":
    main()
