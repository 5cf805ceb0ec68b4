"""The benchmark scripts run at tiny sizes, write their outputs and measure sensibly.

These are smoke tests of ``experiments/bench_optimizers.py`` and
``experiments/bench_complexity.py`` (tiny models, 2-3 methods, d in {64, 128}),
plus checks of the helpers whose numbers end up in the reports.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from experiments import bench_common, bench_complexity, bench_optimizers


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ----- helpers ---------------------------------------------------------------------------
def test_loglog_slope_recovers_power_law() -> None:
    dims = [64, 128, 256, 512]
    assert bench_common.loglog_slope(dims, [3.0 * d**2 for d in dims]) == pytest.approx(2.0)
    assert bench_common.loglog_slope(dims, [0.5 * d**3 for d in dims]) == pytest.approx(3.0)
    assert math.isnan(bench_common.loglog_slope([64], [1.0]))
    assert math.isnan(bench_common.loglog_slope([64, 128], [0.0, -1.0]))


def test_phase_weights_follow_the_schedule() -> None:
    specs = {s.label: s for s in bench_optimizers.method_specs(T=10, t_inv=50)}
    kfac = bench_optimizers.phase_weights(specs["KFAC"])
    assert {k: v[0] for k, v in kfac.items()} == {"inverse": 0, "plain": 1, "factors": 10}
    assert kfac["inverse"][1] == pytest.approx(1 / 50)
    assert kfac["factors"][1] == pytest.approx(1 / 10 - 1 / 50)
    assert kfac["plain"][1] == pytest.approx(9 / 10)
    singd = bench_optimizers.phase_weights(specs["SINGD-diagonal"])
    assert singd == {"update": (0, pytest.approx(0.1)), "plain": (1, pytest.approx(0.9))}
    assert bench_optimizers.phase_weights(specs["SINGD-diagonal T=1"]) == {"update": (0, 1.0)}
    assert bench_optimizers.phase_weights(specs["AdamW"]) == {"plain": (0, 1.0)}


def test_torch_state_bytes_counts_adamw_moments() -> None:
    model = torch.nn.Linear(5, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 5)).sum().backward()
    optimizer.step()
    params = sum(p.numel() * 4 for p in model.parameters())
    steps = sum(s["step"].numel() * s["step"].element_size() for s in optimizer.state.values())
    assert bench_common.torch_optimizer_state_bytes(optimizer) == 2 * params + steps


def test_select_methods_always_adds_adamw_and_rejects_unknown() -> None:
    specs = bench_optimizers.method_specs()
    chosen = bench_optimizers.select_methods(["INGD"], specs, with_authors=True)
    assert [s.label for s in chosen] == ["AdamW", "INGD", "authors INGD"]
    chosen = bench_optimizers.select_methods(["INGD", "IKFAC", "authors IKFAC"], specs, True)
    assert [s.label for s in chosen] == ["AdamW", "IKFAC", "INGD", "authors IKFAC"]
    chosen = bench_optimizers.select_methods(["kfac-variants"], specs, with_authors=False)
    assert [s.label for s in chosen] == ["AdamW", "KFAC", "RS-KFAC", "SRE-KFAC", "SENG"]
    with pytest.raises(ValueError, match="--methods entry 'nope'"):
        bench_optimizers.select_methods(["nope"], specs, with_authors=False)


def test_merge_rows_keeps_each_runs_adamw_and_fills_memory() -> None:
    specs = bench_optimizers.method_specs()

    def row(method: str, run: str, **extra: object) -> dict:
        base = {"model": "vgg", "precision": "fp32", "batch": 128, "method": method}
        return {**base, "run": run, "timing": "split", **extra}

    old = [row("AdamW", "r1"), row("INGD", "r1", iter_s=5.0), row("KFAC", "r1", iter_s=9.0)]
    new = [row("AdamW", "r2"), row("INGD", "r2", iter_s=4.0)]
    merged = bench_optimizers.merge_rows(old, new, specs)
    assert [(r["method"], r["run"]) for r in merged] == [
        ("AdamW", "r1"),
        ("AdamW", "r2"),
        ("KFAC", "r1"),
        ("INGD", "r2"),
    ]
    memory = [
        {**row("AdamW", "r3", peak_bytes=10), "timing": "none"},
        {**row("KFAC", "r3", peak_bytes=30), "timing": "none"},
    ]
    filled = bench_optimizers.merge_rows(merged, memory, specs)
    assert len(filled) == 4
    kfac = next(r for r in filled if r["method"] == "KFAC")
    assert (kfac["run"], kfac["iter_s"], kfac["peak_bytes"]) == ("r1", 9.0, 30)
    assert all(r["peak_bytes"] == 10 for r in filled if r["method"] == "AdamW")


def test_peer_rows_pair_ours_and_the_authors_within_one_run() -> None:
    def row(method: str, run: str, ratio: float) -> dict:
        base = {"model": "vgg", "precision": "fp32", "batch": 128, "method": method}
        return {**base, "run": run, "iter_ratio": ratio, "state_bytes": 8}

    rows = [
        row("SINGD-diagonal", "r1", 1.0),
        row("authors SINGD-diagonal", "r1", 1.25),
        row("SINGD-hierarchical", "r2", 1.1),  # its authors row is from another run
        row("authors SINGD-hierarchical", "r1", 1.5),
    ]
    table = bench_optimizers.peer_rows(rows)
    assert [(r["method"], r["iter_ours_over_authors"]) for r in table] == [
        ("SINGD-diagonal", pytest.approx(0.8))
    ]


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="--batch=0"):
        bench_optimizers.parse_args(["--batch", "0"])
    with pytest.raises(ValueError, match="--inverse-dims"):
        bench_complexity.parse_args(["--inverse-dims", "128"])
    with pytest.raises(ValueError, match="--methods entry"):
        bench_complexity.method_names(["SINGD-nope"])
    with pytest.raises(ValueError, match="malloc='mmap' is invalid"):
        bench_common.configure_malloc("mmap")


def test_peak_rss_sees_a_new_allocation() -> None:
    probe = bench_common.PeakRSS()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    peak = probe.peak_bytes()
    del block
    if probe.exact:
        assert peak >= 60 * 2**20
    else:
        assert peak >= 0


# ----- bench_optimizers ------------------------------------------------------------------
def test_bench_optimizers_tiny_run_writes_outputs(tmp_path: Path) -> None:
    rows = bench_optimizers.main(
        [
            "--models",
            "tiny_vgg",
            "--batch",
            "4",
            "--methods",
            "SGD",
            "SINGD-diagonal",
            "KFAC",
            "SENG",
            "--precisions",
            "fp32",
            "--rounds",
            "2",
            "--warmup-rounds",
            "0",
            "--timing",
            "split",
            "--no-memory",
            "--authors",
            "off",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
        ]
    )
    for name in ("optimizers.md", "optimizers.csv", "optimizers.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert [r["method"] for r in rows] == ["SGD", "AdamW", "KFAC", "SENG", "SINGD-diagonal"]
    by_method = {r["method"]: r for r in rows}
    assert by_method["SENG"]["state_bytes"] > by_method["SGD"]["state_bytes"]
    assert by_method["AdamW"]["iter_ratio"] == pytest.approx(1.0)
    assert all(r["iter_s"] > 0 for r in rows)
    # SGD keeps one momentum buffer, AdamW two moments (+ step counters).
    assert 0.45 < by_method["SGD"]["state_ratio"] < 0.5
    # SINGD-diagonal: the momentum buffer plus four diagonals per layer.
    assert by_method["SINGD-diagonal"]["state_bytes"] > by_method["SGD"]["state_bytes"]
    assert by_method["SINGD-diagonal"]["update_s"] == by_method["SINGD-diagonal"]["update_s"]
    text = (tmp_path / "optimizers.md").read_text()
    assert bench_common.cpu_model() in text and torch.__version__ in text
    assert len(read_csv(tmp_path / "optimizers.csv")) == 5
    (tmp_path / "optimizers.md").unlink()
    again = bench_optimizers.main(["--report-only", "--out", str(tmp_path)])
    assert [r["method"] for r in again] == [r["method"] for r in rows]
    assert "--report-only" in (tmp_path / "optimizers.md").read_text()
    assert len(read_csv(tmp_path / "optimizers.csv")) == 5


def test_bench_optimizers_window_mode_and_memory_probe(tmp_path: Path) -> None:
    rows = bench_optimizers.main(
        [
            "--models",
            "tiny_vit",
            "--batch",
            "2",
            "--methods",
            "SINGD-diagonal",
            "--precisions",
            "bf16",
            "--rounds",
            "1",
            "--warmup-rounds",
            "0",
            "--timing",
            "window",
            "--T",
            "2",
            "--min-window",
            "2",
            "--memory",
            "--authors",
            "off",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
            "--malloc",
            "heap",
        ]
    )
    bench_common.configure_malloc("default")  # the rest of the suite as before
    assert "- malloc: heap" in (tmp_path / "optimizers.md").read_text()
    assert {r["method"] for r in rows} == {"AdamW", "SINGD-diagonal"}
    for row in rows:
        assert row["precision"] == "bf16"
        assert row["peak_bytes"] > 0 and row["iter_s"] > 0
    singd = next(r for r in rows if r["method"] == "SINGD-diagonal")
    assert math.isfinite(singd["update_s"]) and math.isfinite(singd["peak_ratio"])
    # A second run with --append keeps the first run's rows and adds its own.
    bench_optimizers.main(
        [
            "--models",
            "tiny_vit",
            "--batch",
            "2",
            "--methods",
            "SGD",
            "--precisions",
            "fp32",
            "--rounds",
            "1",
            "--warmup-rounds",
            "0",
            "--timing",
            "split",
            "--no-memory",
            "--authors",
            "off",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
            "--append",
        ]
    )
    table = read_csv(tmp_path / "optimizers.csv")
    assert {(r["precision"], r["method"]) for r in table} == {
        ("bf16", "AdamW"),
        ("bf16", "SINGD-diagonal"),
        ("fp32", "AdamW"),
        ("fp32", "SGD"),
    }


@pytest.mark.skipif(not bench_optimizers.authors_available(), reason="singd not installed")
def test_directions_match_the_authors_package() -> None:
    specs = {s.label: s for s in bench_optimizers.method_specs()}
    cpu = torch.device("cpu")
    for label in ("SINGD-diagonal", "SINGD-hierarchical"):
        diffs = bench_optimizers.compare_directions("tiny_vgg", specs[label], 2, 4, cpu)
        assert len(diffs) == 2 and max(diffs) < 1e-3
    # Known convention difference (DIRECTION_NOTES): equal while K = I, then not.
    block = specs["SINGD-block_diagonal"]
    diffs = bench_optimizers.compare_directions("tiny_vgg", block, 2, 4, cpu)
    assert diffs[0] < 1e-5 and diffs[1] > 1e-4
    assert "SINGD-block_diagonal" in bench_optimizers.DIRECTION_NOTES


@pytest.mark.skipif(not bench_optimizers.authors_available(), reason="singd not installed")
def test_authors_state_bytes_match_ours_for_the_same_structure() -> None:
    torch.manual_seed(0)
    model = bench_common.build_bench_model("tiny_vgg")
    specs = {s.label: s for s in bench_optimizers.method_specs()}
    batch = bench_optimizers.make_batch(2, 32, torch.device("cpu"))
    states = []
    for label in ("SINGD-hierarchical", "authors SINGD-hierarchical"):
        runner = bench_optimizers.Runner(
            specs[label], bench_optimizers.copy.deepcopy(model), batch, "fp32", torch.device("cpu")
        )
        runner.train_step()
        states.append(runner.state_bytes())
    assert states[0] == states[1] > 0


# ----- bench_complexity ------------------------------------------------------------------
def test_bench_complexity_tiny_run_writes_tables(tmp_path: Path) -> None:
    results, inverse_rows = bench_complexity.main(
        [
            "--dims",
            "64",
            "128",
            "--methods",
            "SINGD-dense",
            "SINGD-diagonal",
            "KFAC-eigh",
            "KFAC-rsvd",
            "--repeats",
            "1",
            "--fit-from",
            "64",
            "--inverse-dims",
            "256",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
        ]
    )
    for name in ("complexity.md", "complexity.csv", "complexity_inverse.csv", "complexity.png"):
        assert (tmp_path / name).stat().st_size > 0
    entries = {(r["method"], r["d"]): r["entries"] for r in results}
    assert entries[("SINGD-dense", 64)] == 4 * 64 * 64  # K, C, m_K, m_C
    assert entries[("SINGD-diagonal", 128)] == 4 * 128
    assert entries[("KFAC-eigh", 128)] == 4 * 128 * 128  # S_K, S_C and two inverses
    assert all(r["note"] for r in results if r["method"] == "KFAC-rsvd")  # exact fallback
    errors = {r["method"]: r["applied_inverse_rel_error"] for r in inverse_rows}
    assert errors["eigh (KFAC: eigh + inverse)"] < 1e-3
    assert errors["rsvd"] < 0.05 and errors["srevd"] < 0.05
    text = (tmp_path / "complexity.md").read_text()
    assert "predicted" in text and bench_common.cpu_model() in text


def test_synthetic_factor_has_the_requested_spectrum() -> None:
    factor = bench_complexity.synthetic_factor(32, decay=2.0)
    values = torch.linalg.eigvalsh(factor).flip(0)
    expected = torch.arange(1, 33, dtype=torch.float64).pow(-2.0)
    assert torch.allclose(values, expected, atol=1e-12)
