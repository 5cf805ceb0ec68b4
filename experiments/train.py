"""The single training entrypoint.

    python -m experiments.train data=mnist5k model=vgg optimizer=singd_diagonal trainer.epochs=5

Composes ``conf/train.yaml`` with Hydra, trains, writes the run directory (Hydra's
output directory) and returns the final test error, so Hydra sweepers can optimize
it. A bad config prints one line naming the key, the value and what is allowed, and
exits with code 2 before training starts.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError, check_group_overrides, register_resolvers

register_resolvers()


def _remove_if_empty_run(path: Path) -> None:
    """Remove a run directory that holds nothing but Hydra's own files."""
    if path.is_dir() and {p.name for p in path.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(path, ignore_errors=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra task function: one training run."""
    from experiments.trainer import run

    run_path = Path(HydraConfig.get().runtime.output_dir)
    try:
        return run(cfg, run_path)
    except ConfigError as error:
        _remove_if_empty_run(run_path)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def precheck(argv: list[str]) -> None:
    """Compose the config once before Hydra does, to turn its errors into one line.

    Unknown group options and unknown keys are reported as ``error: ...`` with exit
    code 2. Multiruns and Hydra flags (``-m``, ``--cfg``, ...) are left to Hydra.

    Args:
        argv: Command-line arguments without the program name.
    """
    try:
        check_group_overrides(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from experiments.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            compose(config_name="train", overrides=argv)
            return
        except (HydraException, OmegaConfBaseException) as error:
            message = str(error).strip().splitlines()[0]
        for arg in argv:  # name an unknown key together with the allowed ones
            key, _, value = arg.partition("=")
            parent, _, leaf = key.rpartition(".")
            if not parent or arg.startswith("+"):
                continue
            others = [a for a in argv if a != arg]
            try:
                node = OmegaConf.select(compose(config_name="train", overrides=others), parent)
            except (HydraException, OmegaConfBaseException):
                continue
            if isinstance(node, DictConfig) and leaf not in node:
                message = f"{key}={value!r} is invalid: unknown key; {parent} has {sorted(node)}"
                break
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def cli() -> None:
    """Check the command line, then hand over to Hydra."""
    precheck(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
