# Release (valuealign.release): package chosen runs and datasets into release/ (git-ignored):
# adapters with model cards, alignment and consultation datasets with datasheets, LICENSE,
# CITATION.cff, the licence of each part and SHA256SUMS. Nothing is uploaded.
#   make release                                   # every finished run
#   make release RELEASE_RUNS=<run_id>,<run_id>    # chosen runs
#   make release RELEASE_ARGS="--no-consultation --value-sets germany"
RELEASE_RUNS ?=
RELEASE_ARGS ?=

release: setup ## package runs + datasets into release/ (RELEASE_RUNS=id,id; RELEASE_ARGS=...); nothing is uploaded
	$(PY) -m valuealign.release $(if $(RELEASE_RUNS),--runs $(RELEASE_RUNS)) $(RELEASE_ARGS)

release-verify: ## check release/: checksums, model cards, licences
	$(PY) -m valuealign.release --verify release

.PHONY: release release-verify
