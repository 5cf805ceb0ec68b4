# Reproduce the papers' figures and tables (issue 6). Included by the Makefile (uses its PY,
# STAMP, SCALE, LAUNCHER, DATA, ARGS).
#
#   make reproduce-fig1 SCALE=smoke                  # SINGD Fig. 1 in seconds (synthetic stand-in data)
#   make reproduce-fig1 DATA=fashion_mnist           # the same grid on real data available offline
#   make reproduce-fig6 SCALE=paper LAUNCHER=joblib  # full protocol, another Hydra launcher
#   make reproduce-fig7 / reproduce-rkfac / reproduce-tables
#   make figures                                     # rebuild every figure from existing runs only
#
# Each reproduce-* target runs its grid (conf/experiment/<name>.yaml) with Hydra multirun into
# $(RUNS_ROOT)/<experiment>/<TAG>/<run>/ (TAG = SCALE, plus -DATA when given) with
# trainer.resume=true trainer.skip_if_done=true -- an interrupted grid continues where it
# stopped and finished runs are skipped -- then its analysis script, which writes
# results/figures/<name>-<TAG>.{png,pdf} and results/tables/<name>-<TAG>-*.{md,csv,tex}.
# Failed runs do not stop the analysis: the figure marks them, then make exits non-zero.
#
# RUNS_ROOT (default multirun) and RESULTS_DIR (default results) move both trees.
# Per scale (override with SEEDS=, WIDTH=, SPECTRUM_PERIOD=, BATCH=, EVAL_EVERY=):
#   seeds              smoke 0 | cpu 0,1 | paper 0,1,2 (randomized K-FAC grid: 0,...,9, as the paper)
#   VGG width          smoke 1/16 | cpu 1/4 | paper 1 (model.width_multiplier of VGG / VGG16_bn)
#   spectrum period    smoke 1 | cpu 3 | paper 30 (steps between saved spectra, and T = T_inv)
#   batch size         smoke 8 (BATCH=...) | cpu, paper: the experiment's (the papers' 128 / 256)
#   evaluation         smoke: after every step (EVAL_EVERY=1, two points per curve) | else per epoch
# Epoch caps and data subsets come from conf/scale/<SCALE>.yaml.

REPRO_SEEDS_smoke := 0
REPRO_SEEDS_cpu := 0,1
REPRO_SEEDS_paper := 0,1,2
REPRO_RKFAC_SEEDS_paper := 0,1,2,3,4,5,6,7,8,9
REPRO_WIDTH_smoke := 0.0625
REPRO_WIDTH_cpu := 0.25
REPRO_WIDTH_paper := 1.0
REPRO_BATCH_smoke := 8
REPRO_EVAL_smoke := 1
REPRO_PERIOD_smoke := 1
REPRO_PERIOD_cpu := 3
REPRO_PERIOD_paper := 30

RUNS_ROOT ?= multirun
RESULTS_DIR ?= results
SEEDS ?= $(REPRO_SEEDS_$(SCALE))
RKFAC_SEEDS ?= $(or $(REPRO_RKFAC_SEEDS_$(SCALE)),$(SEEDS))
WIDTH ?= $(REPRO_WIDTH_$(SCALE))
SPECTRUM_PERIOD ?= $(REPRO_PERIOD_$(SCALE))
BATCH ?= $(REPRO_BATCH_$(SCALE))
EVAL_EVERY ?= $(REPRO_EVAL_$(SCALE))
REPRO_TAG = $(SCALE)$(if $(DATA),-$(DATA))
REPRO_DATA = $(if $(DATA),data=$(DATA))
# The grid runner: $(REPRO_GRID) experiment=<name> hydra.sweep.dir=$(RUNS_ROOT)/<experiment>/$(REPRO_TAG) ...
JOBS ?= 2
REPRO_GRID = $(PY) -m experiments.train -m scale=$(SCALE) hydra/launcher=$(LAUNCHER) \
             $(if $(filter joblib,$(LAUNCHER)),hydra.launcher.n_jobs=$(JOBS)) \
             trainer.resume=true trainer.skip_if_done=true $(if $(BATCH),trainer.batch_size=$(BATCH)) \
             $(if $(EVAL_EVERY),trainer.eval_every_steps=$(EVAL_EVERY))

.PHONY: reproduce-fig1 reproduce-fig6 reproduce-fig7 reproduce-tables reproduce-rkfac figures \
        reproduce-check

reproduce-check:
	@case "$(SCALE)" in smoke|cpu|paper) ;; \
	  *) echo "error: SCALE=$(SCALE) is invalid: allowed values are smoke, cpu, paper" >&2; exit 2;; esac

reproduce-fig1: $(STAMP) reproduce-check
	status=0; \
	$(REPRO_GRID) experiment=fig1 hydra.sweep.dir=$(RUNS_ROOT)/fig1/$(REPRO_TAG) $(REPRO_DATA) \
	  trainer.seed=$(SEEDS) model.width_multiplier=$(WIDTH) $(ARGS) || status=1; \
	$(PY) -m analysis.fig1 --runs $(RUNS_ROOT)/fig1/$(REPRO_TAG) --tag $(REPRO_TAG) --out $(RESULTS_DIR) || status=1; \
	exit $$status

reproduce-fig6: $(STAMP) reproduce-check
	status=0; \
	$(REPRO_GRID) experiment=fig6 hydra.sweep.dir=$(RUNS_ROOT)/fig6/$(REPRO_TAG) $(REPRO_DATA) \
	  trainer.seed=$(SEEDS) $(ARGS) || status=1; \
	$(PY) -m analysis.fig6 --runs $(RUNS_ROOT)/fig6/$(REPRO_TAG) --tag $(REPRO_TAG) --out $(RESULTS_DIR) || status=1; \
	exit $$status

# Fig. 7 has four grids (VGG, ConvMixer, RepViT on two datasets; the GCN on Cora, which keeps
# its graph dataset when DATA is given), all in multirun/fig7/<TAG>/.
reproduce-fig7: $(STAMP) reproduce-check
	status=0; \
	$(REPRO_GRID) experiment=fig7_vgg hydra.sweep.dir=$(RUNS_ROOT)/fig7/$(REPRO_TAG) $(REPRO_DATA) \
	  trainer.seed=$(SEEDS) model.width_multiplier=$(WIDTH) $(ARGS) || status=1; \
	$(REPRO_GRID) experiment=fig7_convmixer hydra.sweep.dir=$(RUNS_ROOT)/fig7/$(REPRO_TAG) $(REPRO_DATA) \
	  trainer.seed=$(SEEDS) $(ARGS) || status=1; \
	$(REPRO_GRID) experiment=fig7_repvit hydra.sweep.dir=$(RUNS_ROOT)/fig7/$(REPRO_TAG) $(REPRO_DATA) \
	  trainer.seed=$(SEEDS) $(ARGS) || status=1; \
	$(REPRO_GRID) experiment=fig7_gcn hydra.sweep.dir=$(RUNS_ROOT)/fig7/$(REPRO_TAG) \
	  trainer.seed=$(SEEDS) $(ARGS) || status=1; \
	$(PY) -m analysis.fig7 --runs $(RUNS_ROOT)/fig7/$(REPRO_TAG) --tag $(REPRO_TAG) --out $(RESULTS_DIR) || status=1; \
	exit $$status

# SINGD Table 1 and Figs. 5 and 8 (no training); Tables 2-3 when results/bench/complexity.csv exists.
reproduce-tables: $(STAMP)
	$(PY) -m analysis.singd_table1 --out $(RESULTS_DIR)
	$(PY) -m analysis.singd_fig5 --out $(RESULTS_DIR)
	$(PY) -m analysis.singd_fig8 --out $(RESULTS_DIR)
	$(PY) -m analysis.singd_tables23 --out $(RESULTS_DIR)

# Randomized K-FACs: Table 1 and Fig. 2 (one grid, multirun/rkfac/<TAG>/) and Fig. 1 + Prop. 3.1
# (one K-FAC run saving factor spectra, multirun/rkfac_spectrum/<TAG>/).
reproduce-rkfac: $(STAMP) reproduce-check
	status=0; \
	$(REPRO_GRID) experiment=rkfac_table1 hydra.sweep.dir=$(RUNS_ROOT)/rkfac/$(REPRO_TAG) $(REPRO_DATA) \
	  trainer.seed=$(RKFAC_SEEDS) model.width_multiplier=$(WIDTH) $(ARGS) || status=1; \
	$(REPRO_GRID) experiment=rkfac_spectrum hydra.sweep.dir=$(RUNS_ROOT)/rkfac_spectrum/$(REPRO_TAG) $(REPRO_DATA) \
	  model.width_multiplier=$(WIDTH) optimizer.T=$(SPECTRUM_PERIOD) optimizer.T_inv=$(SPECTRUM_PERIOD) \
	  trainer.spectra.every_early=$(SPECTRUM_PERIOD) $(ARGS) || status=1; \
	$(PY) -m analysis.rkfac_table1 --runs $(RUNS_ROOT)/rkfac/$(REPRO_TAG) --tag $(REPRO_TAG) --out $(RESULTS_DIR) || status=1; \
	$(PY) -m analysis.rkfac_fig2 --runs $(RUNS_ROOT)/rkfac/$(REPRO_TAG) --tag $(REPRO_TAG) --out $(RESULTS_DIR) || status=1; \
	$(PY) -m analysis.rkfac_spectrum --runs $(RUNS_ROOT)/rkfac_spectrum/$(REPRO_TAG) --tag $(REPRO_TAG) --out $(RESULTS_DIR) || status=1; \
	exit $$status

figures: $(STAMP)
	$(PY) -m analysis.figures --runs-root $(RUNS_ROOT) --out $(RESULTS_DIR)
