"""bench.distributed (`python -m bench.distributed`): its pure helpers, the message it gives without
MPI, and a quick two-rank allreduce run at two small sizes (skipped, with the reason, where mpi4py or
mpiexec is missing: pip install -e '.[mpi]')."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` lives beside `jitnet`, not in the installed package
    sys.path.insert(0, str(ROOT))

from bench import distributed as bd  # noqa: E402

MPI_MISSING = bd.mpi_missing()
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=MPI_MISSING or "")


def test_bandwidths_as_nccl_tests_define_them():
    assert bd.alg_bandwidth(1e6, 1e-3) == pytest.approx(1e9)
    assert bd.bus_bandwidth(1e6, 1e-3, 2) == pytest.approx(1e9)  # 2 (n - 1) / n = 1 on two ranks
    assert bd.bus_bandwidth(1e6, 1e-3, 4) == pytest.approx(1.5e9)
    assert bd.bus_bandwidth(1e6, 1e-3, 8) == pytest.approx(1.75e9)
    assert bd.bus_bandwidth(1e6, 1e-3, 1) == 0.0  # nothing crosses a link in a world of one


def test_sizes_parse_format_and_calls_per_sample():
    assert [bd.parse_size(s) for s in ("4K", "16kb", "1M", "64MB", "4096")] == [4096, 16384, 1 << 20, 64 << 20, 4096]
    for bad in ("0", "6", "-4K"):
        with pytest.raises(ValueError):
            bd.parse_size(bad)
    assert [bd.format_size(n) for n in (4096, 1 << 20, 64 << 20, 12)] == ["4 KB", "1 MB", "64 MB", "12 B"]
    assert bd.SIZES[0] == 4096 and bd.SIZES[-1] == 64 << 20 and len(bd.SIZES) == 8
    calls = [bd.calls_per_sample(n) for n in bd.SIZES]
    assert calls == sorted(calls, reverse=True) and calls[0] == 50 and calls[-1] == 1
    assert bd.fraction_met(0.5, 0.5) and not bd.fraction_met(0.49, 0.5)


def test_without_mpi4py_it_says_how_to_install_and_exits_0(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` raises ImportError
    out = tmp_path / "out.json"
    assert bd.main(["--quick", "--json", str(out)]) == 0
    said = capsys.readouterr().out
    assert "mpi4py is not installed" in said and "pip install -e '.[mpi]'" in said and not out.exists()


@needs_mpi
def test_quick_two_rank_allreduce_run_writes_positive_bandwidths(tmp_path):
    out = tmp_path / "out.json"
    assert bd.main(["--quick", "--only", "allreduce", "--sizes", "4K,16K", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["failures"] == [] and doc["quick"] and "train" not in doc
    assert {"machine", "command", "mpi", "definitions", "allreduce", "wall_s"} <= set(doc)
    assert doc["mpi"]["library_version"] and doc["mpi"]["mpi4py"]
    section = doc["allreduce"]
    assert section["ranks"] == 2 and "error" not in section["run"]
    assert [m["bytes"] for m in section["memcpy"]] == [4096, 16384]
    rows = section["rows"]
    assert [(r["bytes"], r["impl"]) for r in rows] == [(n, impl) for n in (4096, 16384) for impl in bd.IMPLS]
    for r in rows:
        assert r["exact"] and r["samples"] == 5 and r["median_s"] > 0
        assert r["algbw_Bps"] > 0 and r["busbw_Bps"] == pytest.approx(r["algbw_Bps"])  # two ranks
        assert r["memcpy_Bps"] > 0 and r["fraction_of_memcpy"] == pytest.approx(r["algbw_Bps"] / r["memcpy_Bps"])
        assert len(r["rank_medians_s"]) == 2
    assert section["target"]["met"] is None and section["target"]["by_size"] == {}  # no size >= 1 MB
