# The compendium's DAG and entry points. `make help` lists them.
# Notebooks run in order through papermill under a parameter profile (PROFILE, default
# smoke = the embedded default: shipped public data + the bundled small model, on CPU).
# A notebook re-runs only when its source, its profile, its library code or an upstream
# stage changed (stamp files in .stamps/).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PROFILE ?= smoke
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMPS  := .stamps
EXEC    := executed/$(PROFILE)
NBSTAMP := $(STAMPS)/$(PROFILE)
CONFIG  := configs/$(PROFILE).yaml
RUN_NB  := $(PY) -m valuealign.notebooks --profile $(CONFIG) --out $(EXEC)
BASE_PY ?= $(shell command -v python3.11 || command -v python3)

LIB      := lib/valuealign
COMMON   := $(addprefix $(LIB)/,__init__.py paths.py config.py provenance.py notebooks.py \
              plotting.py style.py artefacts.py latex_tables.py macros.py errors.py ids.py)
RAWDATA  := $(shell find data/raw -type f -not -name '.*' 2>/dev/null)
export PYTHONHASHSEED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
# numba (UMAP) compiles for a generic x86-64 CPU, not this host's: the same UMAP numerics on every
# x86-64 machine (host code changed the consensus taxonomy at ARI 0.98 on identical embeddings:
# benchmarks/results/reproducibility.json). PyTorch's kernels cannot be made so: data/pinned/.
export NUMBA_CPU_NAME := generic
# the profile, for notebook 06: the thesis reports the evaluation this profile names (runs/_evaluations/)
export VALUEALIGN_PROFILE := $(PROFILE)
# Profiles that run in a workspace of their own (valuealign.workspace: links to the inputs, its own
# data/processed, runs and figures), so that they never replace the embedded default's datasets or
# the thesis's figures/: the demo profile (configs/demo.yaml).
ISOLATED_PROFILES := demo
ifneq ($(filter $(PROFILE),$(ISOLATED_PROFILES)),)
WORKSPACE := $(CURDIR)/executed/$(PROFILE)/workspace
export VALUEALIGN_ROOT := $(WORKSPACE)
WORKSPACE_READY := $(WORKSPACE)/.ready
$(WORKSPACE_READY): $(LIB)/workspace.py | $(STAMPS)/venv  # a new link reaches an existing workspace
	VALUEALIGN_ROOT= $(PY) -m valuealign.workspace $(WORKSPACE)  # paths of this checkout, not of the workspace
	@touch $@
endif

.PHONY: help setup all test lint clean distclean notebooks sweep figures thesis thesis-deps bench

help: ## list the targets
	@grep -hE '^[a-zA-Z_%-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=$(PROFILE) (configs/<PROFILE>.yaml), GRID=$(GRID)"

# ---------------------------------------------------------------- environment
setup: $(STAMPS)/venv $(STAMPS)/kernel $(STAMPS)/model $(STAMPS)/git-filter ## create .venv from environment.yml, install lib/, convert the bundled model, register the notebook filter

$(STAMPS)/venv: environment.yml pyproject.toml tools/env_requirements.py
	@test -x $(PY) || $(BASE_PY) -m venv $(VENV)
	@$(BASE_PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(PY) tools/env_requirements.py environment.yml > $(VENV)/requirements.txt
	$(PY) tools/env_requirements.py environment.yml --no-deps > $(VENV)/requirements-nodeps.txt
	# torch first, so that no other package pulls a multi-GB CUDA build on a CPU machine
	$(PIP) install -q --disable-pip-version-check $$(grep '^torch==' $(VENV)/requirements.txt)
	$(PIP) install -q --disable-pip-version-check -r $(VENV)/requirements.txt
	$(PIP) install -q --disable-pip-version-check --no-deps -r $(VENV)/requirements-nodeps.txt
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/kernel: $(STAMPS)/venv
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (valuealign)" >/dev/null
	@touch $@

# Each notebook's one source is notebooks/NN_*.ipynb, committed without outputs: register nbstripout
# (pinned in environment.yml) as this clone's git filter for them (.gitattributes), so that saving an
# executed notebook and `git add` commits its cells only. What it strips besides nbstripout's defaults
# (outputs, counts): papermill's run metadata and injected parameters, what JupyterLab adds to
# language_info besides its name (the Python version of whoever saved it); cell ids are kept. tests/test_notebook_source.py checks the committed files. Outside
# a git checkout (an exported tarball) there is nothing to register.
NBSTRIPOUT_ARGS := --keep-id --drop-tagged-cells injected-parameters --extra-keys "metadata.papermill cell.metadata.papermill metadata.language_info.version metadata.language_info.codemirror_mode metadata.language_info.file_extension metadata.language_info.mimetype metadata.language_info.nbconvert_exporter metadata.language_info.pygments_lexer"
NBSTRIPOUT      := "$(abspath $(PY))" -m nbstripout $(NBSTRIPOUT_ARGS)

$(STAMPS)/git-filter: $(STAMPS)/venv Makefile
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
		git config filter.nbstripout.smudge cat && \
		git config diff.ipynb.textconv '$(NBSTRIPOUT) -t' && \
		echo "registered the nbstripout filter for notebooks/*.ipynb (.gitattributes)"; \
	else echo "not a git checkout: no nbstripout filter to register"; fi
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/model: $(STAMPS)/venv $(LIB)/models.py
	$(PY) -m valuealign.models convert-bundled
	@touch $@

# ---------------------------------------------------------------- notebooks (the DAG)
NB_00 := $(NBSTAMP)/00_survey_data.done
NB_01 := $(NBSTAMP)/01_value_taxonomy.done
NB_02 := $(NBSTAMP)/02_alignment_datasets.done
NB_03 := $(NBSTAMP)/03_finetune.done
NB_04 := $(NBSTAMP)/04_evaluate.done
NB_05 := $(NBSTAMP)/05_public_consultation.done
NB_06 := $(NBSTAMP)/06_thesis_figures.done
NOTEBOOK_STAMPS := $(foreach n,$(sort $(basename $(notdir $(wildcard notebooks/[0-9][0-9]_*.ipynb)))),$(NBSTAMP)/$(n).done)

all: setup $(NOTEBOOK_STAMPS) ## run every notebook on PROFILE (incremental) into executed/PROFILE/ (+ HTML)

# One explicit target per notebook: nb-02 -> setup + .stamps/PROFILE/02_alignment_datasets.done.
# (A second-expansion pattern rule cannot do this: make substitutes the stem for the `%`
# inside $$(filter ...) before expanding it, so the prerequisites came out empty and
# nb-NN built nothing while exiting 0.)
define NB_TARGET
nb-$(firstword $(subst _, ,$(notdir $(1)))): setup $(1) ; @:
endef
$(foreach s,$(NOTEBOOK_STAMPS),$(eval $(call NB_TARGET,$(s))))

# `+` so that an unknown NN fails under `make -n` too
nb-%: ## nb-NN: notebook NN and what it needs (make nb-02 PROFILE=thesis-7b)
	+@echo "make nb-$*: no notebook notebooks/$*_*.ipynb (have: $(patsubst $(NBSTAMP)/%.done,%,$(NOTEBOOK_STAMPS)))" >&2; exit 2

$(NBSTAMP)/%.done: notebooks/%.ipynb $(CONFIG) $(COMMON) $(STAMPS)/setup-done | $(WORKSPACE_READY)
	$(RUN_NB) $* --stamp $@

$(STAMPS)/setup-done: $(STAMPS)/venv $(STAMPS)/kernel $(STAMPS)/model
	@touch $@

# what each stage reads besides its own notebook (library modules and upstream stages)
$(NB_00): $(LIB)/surveys.py $(RAWDATA)
$(NB_01): $(NB_00) $(LIB)/taxonomy.py $(LIB)/consensus.py $(LIB)/pinning.py $(wildcard data/reference/*) $(wildcard data/pinned/*)
$(NB_02): $(NB_00) $(NB_01) $(LIB)/datasets.py $(LIB)/prompts.py $(LIB)/taxonomy.py $(LIB)/splits.py $(LIB)/metrics.py $(LIB)/rows.py $(wildcard data/pinned/*)
$(NB_03): $(NB_02) $(LIB)/training.py $(LIB)/models.py $(LIB)/prompts.py $(LIB)/evaluation.py $(LIB)/inference.py $(LIB)/rows.py
$(NB_04): $(NB_02) $(NB_03) $(LIB)/evaluation.py $(LIB)/models.py $(LIB)/prompts.py $(LIB)/inference.py $(LIB)/metrics.py $(LIB)/stats.py $(LIB)/dilemmas.py data/reference/general_prompts.txt $(wildcard data/raw/daily_dilemmas/*)
$(NB_05): $(NB_03) $(LIB)/consultation.py $(LIB)/polis_groups.py $(LIB)/consultation_eval.py $(LIB)/training.py $(LIB)/evaluation.py $(LIB)/models.py $(LIB)/prompts.py $(LIB)/inference.py $(LIB)/metrics.py $(LIB)/stats.py $(LIB)/dilemmas.py $(LIB)/rows.py $(RAWDATA)
$(NB_06): $(filter-out $(NB_06),$(NOTEBOOK_STAMPS)) $(wildcard $(LIB)/*.py)
# notebook 04 under `make` names its evaluation as the profile's: the one the thesis reports
$(NB_04): notebooks/04_evaluate.ipynb $(CONFIG) $(COMMON) $(STAMPS)/setup-done | $(WORKSPACE_READY)
	$(RUN_NB) 04_evaluate --stamp $@.running
	$(PY) -m valuealign.thesis name-evaluation --profile $(PROFILE)
	@mv $@.running $@

# ---------------------------------------------------------------- tests
test: setup ## lint, unit tests, then every notebook under nbval (embedded default), then pipeline checks
	$(PY) -m ruff check lib tests benchmarks tools
	VALUEALIGN_PIPELINE=1 $(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 \
		tests notebooks

lint: setup ## ruff on the library, tests and notebooks
	$(PY) -m ruff check lib tests benchmarks tools notebooks

bench: setup ## CPU benchmarks -> benchmarks/results/
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

# ---------------------------------------------------------------- housekeeping
clean: ## remove generated data, executed notebooks, runs and figures (keeps .venv and models/)
	rm -rf executed data/processed data/interim data/cache runs $(STAMPS)/$(PROFILE) $(STAMPS)/*/ \
		figures/*.pdf figures/*.png figures/*.tex figures/*.json figures/.lock
	find . -name '__pycache__' -type d -prune -exec rm -rf {} +

distclean: clean ## also remove .venv, models/ and all stamps
	rm -rf $(VENV) models $(STAMPS)

# stage-specific targets (sweep, figures, thesis) live in mk/*.mk
-include mk/*.mk
