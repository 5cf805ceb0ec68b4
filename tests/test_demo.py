"""``make demo``'s figure and table code on real (smoke-scale) run directories."""

from __future__ import annotations

from pathlib import Path

from conftest import compose_config, tiny_overrides

from experiments import demo
from experiments.trainer import run


def test_demo_plot_handles_ok_and_diverged_runs(tmp_path: Path) -> None:
    runs = {}
    for label, extra in (
        ("SGD", ["optimizer.lr=0.05"]),
        ("AdamW", ["optimizer=adamw"]),
        ("SGD-huge-lr", ["optimizer.lr=1e6"]),
    ):
        run_dir = tmp_path / "runs" / label
        run(compose_config(tiny_overrides("vgg", "optimizer=sgd", *extra)), run_dir)
        runs[label] = run_dir
    figure = demo.plot(runs, tmp_path)
    assert figure.exists() and figure.stat().st_size > 10_000
    assert (tmp_path / "demo.pdf").exists()


def test_demo_methods_use_existing_optimizer_configs() -> None:
    conf = Path(demo.__file__).resolve().parent.parent / "conf" / "optimizer"
    for _, config, _ in demo.METHODS:
        assert (conf / f"{config}.yaml").exists(), config
        assert demo.available(config)
