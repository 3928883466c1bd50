"""Data parallelism on MPI (jitnet/distributed.py, TrainStep(distributed=True), Trainer under mpiexec).

The MPI cases start real two-rank jobs, `mpiexec -n 2 python ranks.py <case>`, each bounded in time,
and check what rank 0 reports; they are skipped (with the reason) where mpi4py or mpiexec is
missing (`pip install -e '.[mpi]'`). The rest runs in this process: a world of one, the bucketing,
the epoch sharding, and the device-buffer path against a fake communicator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jitnet as jn
from jitnet import distributed as dist
from jitnet.nn.train import _shards

RANKS = Path(__file__).with_name("ranks.py")


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401

    MPI_MISSING = None if _mpiexec() else "no mpiexec (pip install -e '.[mpi]')"
except ImportError:
    MPI_MISSING = "mpi4py is not installed (pip install -e '.[mpi]')"

needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=MPI_MISSING or "")


def run_job(case: str, out: Path, timeout_s: float, **env) -> tuple[subprocess.CompletedProcess, dict | None, float]:
    """Run `case` on two ranks; (the finished job, rank 0's findings or None, seconds taken)."""
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    environment.update(env)
    start = time.monotonic()
    job = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(RANKS), case, str(out)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=environment,
    )
    report = out / f"{case}.json"
    return job, json.loads(report.read_text()) if report.exists() else None, time.monotonic() - start


def completed(job: subprocess.CompletedProcess, found: dict | None) -> dict:
    assert job.returncode == 0 and found is not None, f"job failed ({job.returncode}):\n{job.stdout}\n{job.stderr}"
    assert found["world"] == 2
    return found


@needs_mpi
def test_data_parallel_steps_equal_one_process_on_the_global_batch(tmp_path):
    """SGD with momentum and Adam, MLP and LeNet, float64 and float32: after 3 steps every rank holds
    bit-identical parameters, equal to one process stepping on the concatenated batches."""
    found = completed(*run_job("equality", tmp_path, 900)[:2])
    cases = {k: v for k, v in found.items() if k != "world"}
    assert len(cases) == 8
    for name, case in cases.items():
        assert case["identical"], f"{name}: the ranks' parameters differ"
        assert case["rel"] <= case["tol"], f"{name}: relative error {case['rel']:.2e} > {case['tol']:.0e}"
        assert case["loss_rel"] <= case["tol"], f"{name}: loss relative error {case['loss_rel']:.2e}"


@needs_mpi
def test_batchnorm_statistics_per_rank_running_statistics_from_rank_0(tmp_path):
    found = completed(*run_job("batchnorm", tmp_path, 600)[:2])
    assert found["buffer_names"] == ["1.num_batches_tracked", "1.running_mean", "1.running_var"]
    assert found["buffers_identical"] and found["params_identical"]


@needs_mpi
def test_ranks_tracing_different_programs_all_raise_naming_the_rank(tmp_path):
    found = completed(*run_job("mismatch", tmp_path, 600)[:2])
    for message in found["messages"]:  # every rank raised, with the same account
        assert message is not None
        assert "rank 1 traced a different training step than rank 0" in message
        assert "(6, 12)" in message and "(8, 12)" in message


@needs_mpi
def test_fit_shards_epochs_logs_on_rank_0_and_resumes(tmp_path):
    """Two ranks with batch 4, one epoch, a checkpoint, a resumed second epoch: the same parameters
    as one process training two epochs with batch 8 (each global batch is the ranks' parts in rank
    order, the last one of 5 split 3 + 2); validation averaged over the ranks."""
    job, found, _ = run_job("fit", tmp_path, 900)
    found = completed(job, found)
    assert found["distributed"] and found["epoch"] == 2 and found["identical"]
    assert found["rel"] <= 1e-5
    np.testing.assert_allclose(found["loss"], found["ref_loss"], rtol=1e-5)
    np.testing.assert_allclose(found["val_loss"], found["ref_val_loss"], rtol=1e-5)
    assert job.stdout.count("epoch 1/1  loss") == 1  # printed by rank 0 only
    assert (tmp_path / "fit.safetensors").exists()


@needs_mpi
@pytest.mark.parametrize("how, message", [("raise", "rank 1 failed; aborting all 2 ranks"), ("kill", "")])
def test_a_failing_rank_stops_the_job(tmp_path, how, message):
    """Rank 1 raises (or is killed) while rank 0 waits in an allreduce: the job ends, with an error."""
    job, found, seconds = run_job(f"fail-{how}", tmp_path, 120)
    assert job.returncode != 0 and found is None
    assert message in job.stderr
    assert seconds < 60


@needs_mpi
def test_a_hanging_rank_times_out_the_collective(tmp_path):
    job, found, seconds = run_job("fail-hang", tmp_path, 120, JITNET_DIST_TIMEOUT="3")
    assert job.returncode != 0 and found is None
    assert "allreduce (reduce-scatter) did not complete within 3 s" in job.stderr
    assert seconds < 60


# ---- in this process ----


@pytest.fixture
def world(monkeypatch):
    """A fresh world for each test (init runs again)."""
    monkeypatch.setattr(dist, "_world", None)
    for var in dist._SIZE_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_a_world_of_one_without_a_launcher(world):
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    tree = {"a": np.arange(3.0), "b": [np.float32(2.0), jn.asarray(np.ones((2, 2), np.float32))]}
    mean = dist.allreduce_mean(tree)
    np.testing.assert_array_equal(mean["a"], tree["a"])
    assert isinstance(mean["b"][1], jn.Array) and mean["b"][1].shape == (2, 2)
    assert dist.broadcast(tree) is tree
    assert dist.allgather(5) == [5]
    dist.barrier()
    with pytest.raises(TypeError, match="not floats"):
        dist.allreduce_mean({"n": np.arange(3)})


def test_launched_without_mpi4py_is_an_error(world):
    world.setenv("PMI_SIZE", "2")
    world.setitem(sys.modules, "mpi4py", None)  # import mpi4py fails
    world.delitem(sys.modules, "mpi4py.MPI", raising=False)
    with pytest.raises(RuntimeError, match=r"MPI launcher with 2 ranks, but mpi4py is not installed"):
        dist.init()


def test_timeout_setting(monkeypatch):
    monkeypatch.setenv("JITNET_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="JITNET_DIST_TIMEOUT='soon'"):
        dist.timeout_s()
    monkeypatch.setenv("JITNET_DIST_TIMEOUT", "-1")
    with pytest.raises(ValueError, match="positive"):
        dist.timeout_s()


def test_buckets_pack_consecutive_leaves_up_to_the_limit():
    assert dist.buckets([10, 10, 10], 4, limit=80) == [[0, 1], [2]]
    assert dist.buckets([100, 1, 1], 4, limit=80) == [[0], [1, 2]]  # a big leaf alone
    assert dist.buckets([], 4) == []


@pytest.mark.parametrize("n, batch, world, drop_last", [(53, 4, 2, False), (10, 4, 3, False), (53, 4, 2, True)])
def test_shards_use_every_sample_once_in_equal_steps(n, batch, world, drop_last):
    order = np.random.default_rng(0).permutation(n)
    parts = [list(_shards(n, batch, order, drop_last, world, r)) for r in range(world)]
    steps = {len(p) for p in parts}
    assert len(steps) == 1  # every rank takes the same number of steps (each is a collective)
    used = np.concatenate([idx for p in parts for idx, _, _ in p])
    expected = n - n % (batch * world) if drop_last else n
    assert len(used) == expected and len(np.unique(used)) == expected
    for step in zip(*parts):  # a step's global batch: the ranks' parts in rank order
        glob = np.concatenate([idx for idx, _, _ in step])
        assert step[0][2] == len(glob) and len(step[0][0]) > 0  # rank 0's part never empty
        assert all(uneven == (len(glob) < batch * world) for _, uneven, _ in step)


class _Request:
    def Test(self) -> bool:
        return True


class FakeComm:
    """Rank 0 of a two-rank world whose other rank holds the same values; records the buffers MPI is given."""

    def __init__(self):
        self.given: list = []
        self._sums: list = []

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 2

    @staticmethod
    def _get(buf) -> np.ndarray:
        return buf if isinstance(buf, np.ndarray) else buf.copy_to_host()

    @staticmethod
    def _put(buf, values: np.ndarray) -> None:
        if isinstance(buf, np.ndarray):
            buf[:] = values
        else:
            buf.copy_to_device(values)

    def Ireduce_scatter_block(self, send, recv, op=None):
        self.given += [send, recv]
        self._sums.append(2 * self._get(send))  # every block summed with the other rank's equal values
        self._put(recv, self._sums[-1][: len(recv)])  # rank 0 keeps block 0
        return _Request()

    def Iallgather(self, send, recv):
        self.given += [send, recv]
        sums = self._sums.pop(0)  # the buckets' all-gathers follow their reduce-scatters in order
        np.testing.assert_array_equal(self._get(send), sums[: len(send)])
        self._put(recv, sums)  # block 0 from us, block 1 as the other rank reduced it
        return _Request()


def test_reduce_scatter_then_allgather_buckets(world):
    """The host path over a fake two-rank communicator: sums of every leaf, whatever the bucket padding."""
    pytest.importorskip("mpi4py")
    comm = FakeComm()
    world.setattr(dist, "_world", dist._World(comm, cuda_aware=False))
    tree = {"w": np.arange(7, dtype=np.float32), "b": np.float32(1.5), "n": np.arange(3)}
    mean = dist.allreduce_mean({"w": tree["w"], "b": tree["b"]})
    np.testing.assert_array_equal(mean["w"], tree["w"])  # the same values on both ranks: the mean is the value
    total = dist.allreduce_sum(tree)
    np.testing.assert_array_equal(total["n"], 2 * tree["n"])
    again = dist.allreduce_sum(tree)  # the buckets' buffers are reused: the same answer
    np.testing.assert_array_equal(again["w"], 2 * tree["w"])
    assert len(dist._workspaces) <= dist.MAX_WORKSPACES
    assert all(isinstance(b, np.ndarray) for b in comm.given)


@pytest.mark.cuda
def test_device_buffers_go_to_a_cuda_aware_mpi_directly(world):
    from jitnet.backends.cuda.device import cuda_available

    if not cuda_available():
        pytest.skip("no CUDA device or simulator")
    pytest.importorskip("mpi4py")
    comm = FakeComm()
    world.setattr(dist, "_world", dist._World(comm, cuda_aware=True))
    g = jn.asarray(np.arange(10, dtype=np.float32).reshape(2, 5), device="cuda")
    host = np.ones(3, np.float32)
    out = dist.allreduce_sum({"g": g, "h": host})
    assert isinstance(out["g"], jn.Array) and out["g"].device.kind == "cuda"
    np.testing.assert_array_equal(out["g"].numpy(), 2 * np.arange(10, dtype=np.float32).reshape(2, 5))
    np.testing.assert_array_equal(out["h"], 2 * host)
    device_given = [b for b in comm.given if not isinstance(b, np.ndarray)]
    assert len(device_given) == 4  # the device bucket's send, part, part and gathered buffers: no host copy
    world.setattr(dist, "_world", dist._World(FakeComm(), cuda_aware=False))
    staged = dist.allreduce_sum({"g": g})  # not CUDA-aware: staged through host memory
    assert staged["g"].device.kind == "cuda"
    np.testing.assert_array_equal(staged["g"].numpy(), 2 * g.numpy())
