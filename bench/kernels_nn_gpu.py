"""GPU workloads of issue 5 through the engine (`jn.compile(..., backend="cuda")` on device Arrays)
beside torch on the same GPU (TF32 off: cuBLAS/cuDNN in plain float32, the same arithmetic):

- matmul: n^3 float32 (default 4096): GFLOP/s, fraction of cuBLAS (target >= 50%), the tile and
  its CGMA (flops per byte of global loads: 2*BM*BN / (4*(BM + BN)));
- matmul_bias_relu: relu(x @ w + b) at the same size (torch: relu(addmm));
- conv_lenet: LeNet's conv stack at batch 64 (conv 1->20 5x5 on 1x28x28, max pool 2, conv 20->50
  5x5, max pool 2), forward, and forward + backward (gradients of the sum of the output by both
  filters; torch autograd), in ms and GFLOP/s of the convolutions.

    python -m bench.kernels_nn_gpu                     # all, matmul at 4096
    python -m bench.kernels_nn_gpu --n 2048 --samples 10
    NUMBA_ENABLE_CUDASIM=1 python -m bench.kernels_nn_gpu --simulator --n 16 --batch 1 --image 16 --samples 1

Timing as bench/matmul_gpu.py (docs: .library/device/METHOD.md): warm-up calls first (compile,
cuDNN/cuBLAS heuristics), then batches of back-to-back calls between CUDA events, batch length
~10 ms, median of --samples batches, interleaved rounds. Every result is checked first: jitnet and
torch against a float64 reference (relative Frobenius error < 1e-4; conv sums are long).
Without a usable GPU it says why and exits 0.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bench.matmul_gpu import Impl, _describe_device, _Timer, _torch, rel_error, time_interleaved, unavailable_reason

TOL = 1e-4


def _jn():
    import jitnet as jn

    return jn


def _engine(fn, *arrays):
    """(compiled, device Array inputs) for a function of arrays, compiled for the GPU."""
    jn = _jn()
    f = jn.compile(fn, backend="cuda")
    return f, [jn.asarray(a, device="cuda") for a in arrays]


def _host(x) -> np.ndarray:
    leaves = _jn().ir.pytree.flatten(x)[0]
    return [np.asarray(leaf, np.float64) for leaf in leaves]


def _check(name: str, got: list[np.ndarray], want: list[np.ndarray], errors: dict) -> bool:
    err = max(rel_error(g, w) for g, w in zip(got, want))
    errors[name] = err
    if err >= TOL:
        print(f"  FAIL: {name}: relative Frobenius error {err:.2e} >= {TOL:g}")
    return err < TOL


def _table(title: str, impls: list[Impl], flops: float, errors: dict, extra: dict | None = None) -> None:
    ref = next((i.median for i in impls if i.name.startswith("torch")), None)
    print(f"\n{title}")
    print(f"  {'implementation':<44} {'median ms':>10} {'GFLOP/s':>9} {'of torch':>9} {'spread':>7} {'rel err':>9}")
    for i in impls:
        frac = f"{ref / i.median:9.1%}" if ref and i.median > 0 else "      n/a"
        gf = flops / (i.median * 1e-3) / 1e9 if i.median > 0 else float("nan")
        note = (extra or {}).get(i.name, "")
        print(f"  {i.name:<44} {i.median:>10.3f} {gf:>9.0f} {frac} {i.spread:>7.1%} {errors[i.name]:>9.1e} {note}")


def bench_matmul(n: int, samples: int) -> bool:
    from jitnet.backends.cuda import matmul as mm

    torch = _torch()
    rng = np.random.default_rng(n)
    a, b, bias = (rng.standard_normal(s, dtype=np.float32) for s in ((n, n), (n, n), (n,)))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    jn = _jn()
    t = mm.choose_tile(n, n, n)
    ok, errors = True, {}
    for title, fn, want, tfn in [
        ("matmul", lambda a, b, bias: a @ b, ref, lambda ta, tb, tbias: torch.matmul(ta, tb)),
        (
            "matmul_bias_relu",
            lambda a, b, bias: jn.relu(a @ b + bias),
            np.maximum(ref + bias, 0),
            lambda ta, tb, tbias: torch.relu(torch.addmm(tbias, ta, tb)),
        ),
    ]:
        print(f"\n== {title} {n}^3 float32 ==", flush=True)
        f, args = _engine(fn, a, b, bias)
        name = f"jitnet ({t.name}, CGMA {t.cgma():.0f})"
        impls = [Impl(name, lambda f=f, args=args: f(*args), _Timer("numba"))]
        ok &= _check(name, _host(f(*args)), [want], errors)
        if torch is not None:
            targs = [torch.from_numpy(x).cuda() for x in (a, b, bias)]
            tname = "torch (cuBLAS, no TF32)"
            impls.append(Impl(tname, lambda tfn=tfn, targs=targs: tfn(*targs), _Timer("torch")))
            _check(tname, [tfn(*targs).double().cpu().numpy()], [want], errors)
        time_interleaved(impls, samples)
        _table(f"{title} {n}^3", impls, 2.0 * n**3, errors)
    return ok


def _lenet_shapes(batch: int, image: int):
    return (batch, 1, image, image), (20, 1, 5, 5), (50, 20, 5, 5)


def lenet_flops(batch: int, image: int, backward: bool) -> float:
    """Convolution flops: forward 2*N*O*Ho*Wo*C*kh*kw per conv; backward adds each conv's weight
    gradient (the same count) and conv2's input gradient (x itself needs none)."""
    h1 = image - 4
    h2 = h1 // 2 - 4
    conv1 = 2 * batch * 20 * h1 * h1 * 1 * 25
    conv2 = 2 * batch * 50 * h2 * h2 * 20 * 25
    return conv1 + conv2 + (conv1 + 2 * conv2 if backward else 0)


def _torch_lenet(torch, x, w1, w2, backward: bool):
    """A call running the same stack in torch: the output, or the two filters' gradients."""
    F = torch.nn.functional
    tx = torch.from_numpy(x).cuda()
    tw1, tw2 = (torch.from_numpy(w).cuda().requires_grad_(backward) for w in (w1, w2))

    def tnet():
        return F.max_pool2d(F.conv2d(F.max_pool2d(F.conv2d(tx, tw1), 2), tw2), 2)

    def call():
        if not backward:
            with torch.no_grad():
                return [tnet()]
        return list(torch.autograd.grad(tnet().sum(), (tw1, tw2)))

    return call


def bench_lenet(batch: int, samples: int, image: int = 28) -> bool:
    torch = _torch()
    jn = _jn()
    xs, w1s, w2s = _lenet_shapes(batch, image)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xs, dtype=np.float32)
    w1 = (rng.standard_normal(w1s) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal(w2s) * 0.05).astype(np.float32)

    def net(x, w1, w2):
        h = jn.max_pool2d(jn.conv2d(x, w1), 2)
        return jn.max_pool2d(jn.conv2d(h, w2), 2)

    def loss(x, w1, w2):
        return net(x, w1, w2).sum()

    ref_fwd = jn.compile(net, backend="interpret")(x.astype(np.float64), w1.astype(np.float64), w2.astype(np.float64))
    ref_bwd = jn.compile(jn.grad(loss, argnums=(1, 2)), backend="interpret")(
        x.astype(np.float64), w1.astype(np.float64), w2.astype(np.float64)
    )
    ok = True
    for title, fn, want, backward in [
        ("conv_lenet forward", net, _host(ref_fwd), False),
        ("conv_lenet forward+backward", jn.grad(loss, argnums=(1, 2)), _host(ref_bwd), True),
    ]:
        print(f"\n== {title}, batch {batch} ==", flush=True)
        errors = {}
        f, args = _engine(fn, x, w1, w2)
        name = "jitnet"
        impls = [Impl(name, lambda f=f, args=args: f(*args), _Timer("numba"))]
        ok &= _check(name, _host(f(*args)), want, errors)
        if torch is not None:
            tcall = _torch_lenet(torch, x, w1, w2, backward)
            tname = "torch (cuDNN, no TF32)"
            impls.append(Impl(tname, tcall, _Timer("torch")))
            _check(tname, [r.double().cpu().numpy() for r in tcall()], want, errors)
        time_interleaved(impls, samples)
        _table(
            f"{title}, batch {batch} (GFLOP/s of the convolutions)", impls, lenet_flops(batch, image, backward), errors
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4096, help="matmul size (n x n x n)")
    p.add_argument("--batch", type=int, default=64, help="LeNet batch")
    p.add_argument("--image", type=int, default=28, help="LeNet input size (28; 16 for simulator checks)")
    p.add_argument("--samples", type=int, default=20, help="timed batches per implementation (median)")
    p.add_argument("--only", choices=("matmul", "lenet"), default=None)
    p.add_argument(
        "--simulator", action="store_true", help="allow numba's CUDA simulator (tiny sizes; timings mean nothing)"
    )
    args = p.parse_args(argv)
    reason = unavailable_reason(args.simulator)
    if reason:
        print(f"bench.kernels_nn_gpu: skipped: {reason}")
        return 0
    from numba import cuda

    print(f"device: {_describe_device(cuda)}; torch: {'yes' if _torch() else 'not installed / no CUDA'}")
    ok = True
    if args.only in (None, "matmul"):
        ok &= bench_matmul(args.n, args.samples)
    if args.only in (None, "lenet"):
        ok &= bench_lenet(args.batch, args.samples, args.image)
    print("\nall results within tolerance" if ok else "\nSOME RESULTS WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
