"""Every workload by device: those a run takes by default, and the groups it takes only by name."""

from __future__ import annotations

from bench import elementwise, kernels_nn, matmul_kernels, train_steps
from bench.workload import Workload


def default(device: str) -> list[Workload]:
    both = elementwise.WORKLOADS + kernels_nn.WORKLOADS + train_steps.WORKLOADS
    if device == "cuda":
        return [w.on("cuda") for w in both if w.gpu is not None] + matmul_kernels.gpu()
    return [w.on("cpu") for w in both]


def everything(device: str) -> dict[str, list[Workload]]:
    """Each workload under its name, and each group under its own."""
    groups = matmul_kernels.cpu_groups() if device == "cpu" else {}
    return {w.name: [w] for w in default(device) + [w for ws in groups.values() for w in ws]} | groups


def select(device: str, only: str | None) -> list[Workload]:
    """The workloads `--only` names (workloads or groups, comma-separated); the defaults without it."""
    if not only:
        return default(device)
    known, names = everything(device), [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)} on {device}; known: {', '.join(known)}")
    return [w for n in names for w in known[n]]


def lookup(device: str, name: str) -> Workload:
    return everything(device)[name][0]
