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

from experiments.config import (
    CONF_DIR,
    GROUPS,
    ConfigError,
    check_group_overrides,
    register_resolvers,
    validate_config,
)

register_resolvers()


def _remove_if_empty_run(path: Path) -> None:
    """Remove a run directory that holds nothing but Hydra's own files."""
    if path.is_dir() and {p.name for p in path.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(path, ignore_errors=True)


def _fail(error: Exception | str) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with code 2."""
    lines = (line.strip() for line in str(error).splitlines())
    print(f"error: {' '.join(line for line in lines if line)}", file=sys.stderr)
    sys.exit(2)


# An absolute config path: a relative one resolves against the calling module and fails
# when main()/cli() are called from anywhere but `python -m experiments.train`.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra task function: one training run."""
    from experiments.trainer import run

    run_path = Path(HydraConfig.get().runtime.output_dir)
    try:
        return run(cfg, run_path)
    except ConfigError as error:
        _remove_if_empty_run(run_path)
        _fail(error)


def precheck(argv: list[str]) -> None:
    """Compose the config once before Hydra does, to turn its errors into one line.

    Unknown group options, unknown keys and bad values (:func:`validate_config`, a CUDA
    device without a GPU) are reported as ``error: ...`` with exit code 2 before Hydra
    creates the run directory, which may be an earlier run's: keys outside the run
    hash (``trainer.eval_batch_size``, ...) map a bad config onto a finished run's
    directory. Multiruns and Hydra flags (``-m``, ``--cfg``, ...) are left to Hydra.

    Args:
        argv: Command-line arguments without the program name.
    """
    try:
        check_group_overrides(argv)
    except ConfigError as error:
        _fail(error)
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from experiments.trainer import resolve_device

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name="train", overrides=argv)
        except (HydraException, OmegaConfBaseException) as error:
            message = str(error).strip().splitlines()[0]
        else:
            try:
                validate_config(cfg)
                resolve_device(cfg.trainer.device)
            except ConfigError as error:
                _fail(error)
            return
        # Name an unknown key with its value and the allowed keys: look it up in the
        # config composed from the group choices alone (other keys may be unknown too).
        choices = [a for a in argv if a.partition("=")[0].lstrip("+~") in GROUPS]
        try:
            base = compose(config_name="train", overrides=choices)
        except (HydraException, OmegaConfBaseException):
            base = None
        for arg in argv if base is not None else []:
            key, _, value = arg.partition("=")
            if arg.startswith(("+", "~")) or key in GROUPS or key.startswith("hydra."):
                continue
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            if isinstance(node, DictConfig) and leaf not in node:
                where = parent or "the top level"
                message = f"{key}={value!r} is invalid: unknown key; {where} has {sorted(node)}"
                break
    _fail(message)


def cli() -> None:
    """Check the command line, then hand over to Hydra."""
    precheck(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
