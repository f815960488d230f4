# The experiment grid (valuealign.sweep): every cell (method x value set x seed x model
# profile ...) runs its notebooks through papermill into executed/<grid>/<cell>/ (+ HTML),
# records itself in runs/registry.parquet and is skipped when re-run unless it failed,
# changed or lost its outputs; executed/<grid>/index.html links every executed notebook.
#   make sweep GRID=configs/grids/thesis.yaml EXECUTOR=slurm   # one Slurm job array
#   make sweep SWEEP_ARGS=--dry-run                            # list cells and their state
GRID        ?= configs/grids/smoke.yaml
EXECUTOR    ?= local
WORKERS     ?=
SWEEP_ARGS  ?=
# the cells read the alignment datasets of notebook 02 (made under PROFILE) when it exists
SWEEP_DATA  := $(filter $(NB_02),$(NOTEBOOK_STAMPS))

sweep: setup $(SWEEP_DATA) ## run the experiment grid GRID (EXECUTOR=local|slurm, WORKERS=N, SWEEP_ARGS=--dry-run)
	$(PY) -m valuealign.sweep $(GRID) --executor $(EXECUTOR) $(if $(WORKERS),--workers $(WORKERS)) $(SWEEP_ARGS)
