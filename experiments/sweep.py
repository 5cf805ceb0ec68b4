"""Random hyperparameter search: glue between Hydra's Optuna sweeper and ``train.py``.

The engine is Hydra's Optuna sweeper (``conf/search/*.yaml``, SINGD paper Table 4); this
module adds what the pinned stack (hydra-optuna-sweeper 1.3, optuna 2.10, SQLAlchemy 2)
lacks, as a Hydra callback and an Optuna sampler that ``conf/search/base.yaml`` names:

- :class:`RandomSearchCallback` checks the search space before anything starts (one line,
  exit code 2), creates the SQLite storage so that optuna 2.10 can use it with
  SQLAlchemy 2 (:func:`prepare_storage`), resumes a killed sweep (:func:`resume_study`)
  and turns a diverged run (``train.py`` returns NaN) into a FAILED trial instead of a
  crash of the whole sweep.
- :class:`ResumableRandomSampler` is Optuna's random sampler with one random stream per
  trial, so that a resumed sweep draws what an uninterrupted one would have drawn.

``python -m experiments.sweep --optimizer singd_diagonal --model vgg ...`` (``make
sweep``) checks the names it is given and starts ``python -m experiments.train -m
+search=<optimizer> ...``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from experiments.config import CONF_DIR, ConfigError, group_options

log = logging.getLogger(__name__)

INTERRUPTED = "ngd_interrupted"  # system attribute of a trial killed while running
_SQLITE = "sqlite:///"
_ABSENT = object()


class DivergedRunError(RuntimeError):
    """A trial whose training run diverged (``train.py`` returned NaN)."""


# ----- search space -------------------------------------------------------------------
def _sweep_overrides(config: DictConfig) -> list[tuple[str, str]]:
    """``(source, "key=value")`` for every sweeper param and command-line sweep."""
    pairs = []
    params = config.hydra.sweeper.get("params") or {}
    for key, value in params.items():
        pairs.append((f"hydra.sweeper.params.{key}", f"{key}={value}"))
    for override in config.hydra.overrides.task:
        pairs.append((override.split("=", 1)[0], str(override)))
    return pairs


def check_search_space(config: DictConfig) -> dict[str, tuple[float, float, bool]]:
    """Check the intervals of a sweep before anything starts.

    Args:
        config: The multirun config (with its ``hydra`` node).

    Returns:
        ``key -> (low, high, log)`` for every interval of the search space.

    Raises:
        ConfigError: For an empty or inverted interval, a log interval that reaches 0, a
            key the composed config lacks, no interval at all, or ``n_trials`` < 1.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    intervals: dict[str, tuple[float, float, bool]] = {}
    for source, text in _sweep_overrides(config):
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as error:
            message = str(error).strip().splitlines()[0]
            raise ConfigError(source, text.split("=", 1)[1], message) from error
        if not override.is_interval_sweep():
            continue
        key = override.get_key_element()
        sweep = override.value()
        assert isinstance(sweep, IntervalSweep)
        low, high, is_log = float(sweep.start), float(sweep.end), "log" in sweep.tags
        value = text.split("=", 1)[1]
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ConfigError(
                source, value, f"an interval needs finite low < high (got low={low}, high={high})"
            )
        if is_log and low <= 0:
            raise ConfigError(source, value, f"a log interval needs low > 0 (got low={low})")
        if OmegaConf.select(config, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise ConfigError(source, value, f"{key} is not a key of the composed config")
        intervals[key] = (low, high, is_log)
    if not intervals:
        raise ConfigError(
            "hydra.sweeper.params",
            {},
            "a search space needs at least one interval, e.g. "
            "optimizer.lr: tag(log, interval(1e-4, 1e-1))",
        )
    n_trials = config.hydra.sweeper.get("n_trials")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError("hydra.sweeper.n_trials", n_trials, "must be an integer >= 1")
    return intervals


# ----- storage ------------------------------------------------------------------------
def prepare_storage(url: str) -> None:
    """Create an SQLite storage's folder and a schema optuna 2.10 accepts.

    optuna 2.10 stamps its alembic schema version on a connection that SQLAlchemy 2
    never commits, and then fails on its own check (``AssertionError`` in
    ``get_current_version``). The stamp is written here in a committed transaction;
    everything else is optuna's own code. A storage that is already stamped, or a
    non-SQLite URL, is left alone.

    Args:
        url: The storage URL, e.g. ``sqlite:///multirun/sweep/x/optuna.db``.
    """
    if not url.startswith(_SQLITE):
        return
    Path(url[len(_SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import sqlalchemy
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from optuna.storages._rdb import models  # optuna 2.10 internals (the sweeper pins < 3)

    engine = sqlalchemy.create_engine(url)
    try:
        models.BaseModel.metadata.create_all(engine)
        script = ScriptDirectory(str(Path(models.__file__).parent / "alembic"))
        with engine.begin() as connection:
            context = MigrationContext.configure(connection)
            if context.get_current_revision() is None:
                context.stamp(script, script.get_current_head())
    finally:
        engine.dispose()


def resume_study(url: str, study_name: str) -> tuple[int, int]:
    """Mark trials left RUNNING by a killed sweep as interrupted (FAILED).

    Only one sweeper process may drive a study (its launcher gives the parallelism), so
    a trial still RUNNING when the sweep starts was killed.

    Args:
        url: Storage URL.
        study_name: Study name.

    Returns:
        ``(finished, interrupted)``: trials that count towards ``n_trials`` (complete,
        failed or pruned, not interrupted) and trials marked interrupted now.
    """
    storage = optuna.storages.RDBStorage(url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0, 0
    finished = interrupted = 0
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        if trial.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
            storage.set_trial_system_attr(trial._trial_id, INTERRUPTED, True)
            storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)
            interrupted += 1
        elif not trial.system_attrs.get(INTERRUPTED, False):
            finished += 1
    storage.engine.dispose()
    return finished, interrupted


# ----- sampler ------------------------------------------------------------------------
class ResumableRandomSampler(optuna.samplers.RandomSampler):
    """Optuna's random sampler where trial ``i`` draws from its own stream ``(seed, i)``.

    ``i`` counts the study's trials before this one that were not interrupted, so after
    a kill and restart the re-run of an interrupted trial draws the values it had drawn,
    and every later trial draws what it would have drawn without the interruption.

    Args:
        seed: Seed of the whole search (``None``: a random one).
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self._seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
        self._streams: dict[int, np.random.RandomState] = {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        """Draw ``param_name`` from trial ``trial``'s own stream."""
        stream = self._streams.get(trial.number)
        if stream is None:
            index = sum(
                1
                for other in study.get_trials(deepcopy=False)
                if other.number < trial.number and not other.system_attrs.get(INTERRUPTED)
            )
            stream = self._streams[trial.number] = np.random.RandomState([self._seed, index])
        self._rng = stream
        return super().sample_independent(study, trial, param_name, param_distribution)


# ----- Hydra callback -----------------------------------------------------------------
class RandomSearchCallback(Callback):
    """Checks, storage and resume before a sweep; NaN -> FAILED trial after each run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the search space (exit 2 on a bad one), record the sweep's config in
        ``<sweep dir>/multirun.yaml``, prepare the storage, resume."""
        try:
            intervals = check_search_space(config)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        sweeper = config.hydra.sweeper
        total = int(sweeper.n_trials)
        finished = 0
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
        if sweeper.storage:
            prepare_storage(str(sweeper.storage))
            finished, interrupted = resume_study(str(sweeper.storage), str(sweeper.study_name))
            if finished or interrupted:
                log.info(
                    f"resuming study {sweeper.study_name}: {finished} of {total} trials "
                    f"finished, {interrupted} interrupted (re-run)"
                )
        with read_write(config.hydra), open_dict(config.hydra):
            sweeper.n_trials = max(0, total - finished)
        log.info(
            f"random search over {sorted(intervals)}: {sweeper.n_trials} trials to run, "
            f"storage {sweeper.storage}"
        )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Log which process runs the trial, and when (into the run's ``train.log``)."""
        log.info(f"trial started in process {os.getpid()} at {time.time():.3f}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Report a diverged run (NaN test error) as a failed job, so Optuna marks it FAILED.

        The sweeper would otherwise crash: optuna 2.10 rejects NaN for a COMPLETE trial
        and the sweeper's fallback tells FAIL together with the value, which optuna
        rejects as well.
        """
        if job_return.status != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if isinstance(value, float) and math.isnan(value):
            job_return.status = JobStatus.FAILED
            job_return.return_value = DivergedRunError(
                f"run diverged (final test error NaN); see {config.hydra.runtime.output_dir}"
            )


# ----- command line (make sweep) ------------------------------------------------------
def launcher_options() -> list[str]:
    """Options of ``hydra/launcher``: Hydra's and its plugins' (basic, joblib, ...) and
    the files in ``conf/hydra/launcher`` (slurm)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the launcher plugins' configs
    names = {Path(name).stem for name in ConfigStore.instance().list("hydra/launcher")}
    names |= {p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")}
    return sorted(names)


def sweep_command(
    optimizer: str,
    model: str,
    data: str,
    trials: int,
    scale: str,
    launcher: str,
    jobs: int,
    seed: int,
    overrides: Sequence[str] = (),
) -> list[str]:
    """Check names and numbers, then build the Hydra multirun command of a sweep.

    Args:
        optimizer: Option of ``conf/optimizer`` with a search space in ``conf/search``.
        model: Option of ``conf/model``.
        data: Option of ``conf/data``.
        trials: Total number of trials (>= 1).
        scale: Option of ``conf/scale``.
        launcher: Option of ``hydra/launcher`` (basic, joblib, slurm, ...).
        jobs: Trials launched at a time (>= 1); the joblib launcher's ``n_jobs``.
        seed: Seed of the random search.
        overrides: Further Hydra overrides, passed on unchanged.

    Returns:
        The command (``python -m experiments.train -m ...``).

    Raises:
        ConfigError: For an unknown name or a bad number.
    """
    for group, value in (
        ("optimizer", optimizer),
        ("search", optimizer),
        ("model", model),
        ("data", data),
        ("scale", scale),
    ):
        if value not in group_options(group):
            key = "OPT (search space)" if group == "search" else group
            raise ConfigError(key, value, f"allowed options are {group_options(group)}")
    launchers = launcher_options()
    if launcher not in launchers:
        raise ConfigError("hydra/launcher", launcher, f"allowed options are {launchers}")
    for key, value in (("trials", trials), ("jobs", jobs)):
        if value < 1:
            raise ConfigError(key, value, "must be an integer >= 1")
    if seed < 0:
        raise ConfigError("seed", seed, "must be an integer >= 0")
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "-m",
        f"+search={optimizer}",
        f"optimizer={optimizer}",
        f"model={model}",
        f"data={data}",
        f"scale={scale}",
        f"hydra/launcher={launcher}",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.sampler.seed={seed}",
        f"sweep.parallel={jobs}",
        *([f"hydra.launcher.n_jobs={jobs}"] if launcher == "joblib" else []),
        *overrides,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``make sweep``: check the arguments, then run the Hydra multirun.

    Returns:
        The multirun's exit code (2 for bad arguments, nothing started).
    """
    parser = argparse.ArgumentParser(
        description="Random search (Hydra + Optuna) over conf/search/<optimizer>.yaml.",
        epilog="Further arguments are Hydra overrides, e.g. trainer.epochs=20.",
    )
    parser.add_argument("--optimizer", required=True)
    parser.add_argument("--model", default="vgg")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--launcher", default="basic")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args(argv)
    try:
        command = sweep_command(
            args.optimizer,
            args.model,
            args.data,
            args.trials,
            args.scale,
            args.launcher,
            args.jobs,
            args.seed,
            overrides,
        )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("running:", shlex.join(["python", *command[1:]]), flush=True)
    code = subprocess.call(command)
    if code != 0:
        print(f"error: the sweep exited with code {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
