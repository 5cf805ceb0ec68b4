# Random hyperparameter search (SINGD paper Table 4) with Hydra's Optuna sweeper.
# Included by the Makefile (uses its PY, STAMP, SCALE, LAUNCHER, DATA, ARGS).
#
#   make sweep OPT=singd_diagonal MODEL=vgg DATA=cifar100 TRIALS=20 SCALE=paper
#   make sweep OPT=adamw LAUNCHER=joblib JOBS=4          # 4 trials at a time on this machine
#   make sweep OPT=kfac LAUNCHER=slurm JOBS=16 ARGS="hydra.launcher.partition=gpu"
#   make sweeps OPTS="sgd adamw kfac singd_diagonal" MODEL=vgg DATA=cifar100
#   make sweep-report                                     # best trials, plots, conf/tuned/*.yaml
#
# Trials persist in multirun/sweep/<opt>-<model>-<data>-<scale>/optuna.db: the same
# command again continues a killed sweep; a larger TRIALS extends a finished one.

OPT ?=
OPTS ?= sgd adamw kfac singd_diagonal
MODEL ?= vgg
TRIALS ?= 20
JOBS ?= 1
SEED ?= 0
SWEEP_ROOT ?= multirun/sweep
SWEEP_OUT ?= results/sweeps
TUNED_DIR ?= conf/tuned
SWEEP_DATA = $(or $(DATA),mnist5k)
SWEEP_FLAGS = --model=$(MODEL) --data=$(SWEEP_DATA) --trials=$(TRIALS) --scale=$(SCALE) \
              --launcher=$(LAUNCHER) --jobs=$(JOBS) --seed=$(SEED)

.PHONY: sweep sweeps sweep-report

sweep: $(STAMP)
	$(PY) -m experiments.sweep --optimizer=$(OPT) $(SWEEP_FLAGS) $(ARGS)

sweeps: $(STAMP)
	@for opt in $(OPTS); do \
	  $(PY) -m experiments.sweep --optimizer=$$opt $(SWEEP_FLAGS) $(ARGS) || exit $$?; \
	done

sweep-report: $(STAMP)
	$(PY) -m analysis.sweep --root $(SWEEP_ROOT) --out $(SWEEP_OUT) --tuned $(TUNED_DIR)
