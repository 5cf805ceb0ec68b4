# Benchmarks (included by the Makefile; uses its PY and STAMP).
#   make bench                 optimizer time/memory table, then the complexity tables
#   make bench-optimizers      BENCH_ARGS="--models vgg --timing split" etc.
#   make bench-complexity      BENCH_COMPLEXITY_ARGS="--dims 64 128 256"
#   make bench-quick           minutes: batch 32, the target rows only, fp32
#   make install-bench         adds the [bench] extra (singd==0.0.5, the authors' package)
#   BENCH_MALLOC=default       glibc's own allocator instead of heap-only (see README)
BENCH_ARGS ?=
BENCH_MALLOC ?= heap
BENCH_COMPLEXITY_ARGS ?=
BENCH_OUT ?= results/bench

.PHONY: bench bench-optimizers bench-complexity bench-quick install-bench

bench: bench-optimizers bench-complexity

bench-optimizers: $(STAMP)
	$(PY) -m experiments.bench_optimizers --out $(BENCH_OUT) --malloc $(BENCH_MALLOC) $(BENCH_ARGS)

bench-complexity: $(STAMP)
	$(PY) -m experiments.bench_complexity --out $(BENCH_OUT) $(BENCH_COMPLEXITY_ARGS)

bench-quick: $(STAMP)
	$(PY) -m experiments.bench_optimizers --quick --models vgg --out $(BENCH_OUT) --malloc $(BENCH_MALLOC) $(BENCH_ARGS)

install-bench: $(STAMP)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[bench]"
