# Reproduction targets (valuealign.verify, valuealign.pinning):
#   make verify          re-run what is stale (make all), then compare every thesis macro with the
#                        committed reference data/expected/results-macros-PROFILE.json; exit 1 naming
#                        each macro that drifted beyond its tolerance
#   make verify-update   accept the current numbers as the reference (review with git diff)
#   make pin-taxonomy    recompute notebook 01's taxonomy on this machine and pin it in data/pinned/

.PHONY: verify verify-update pin-taxonomy

verify: all ## re-run what is stale, then compare the thesis macros with data/expected/ (names each drift)
	$(PY) -m valuealign.verify check --profile $(PROFILE)

verify-update: all ## accept the current thesis macros as the reference data/expected/results-macros-PROFILE.json
	$(PY) -m valuealign.verify update --profile $(PROFILE)

pin-taxonomy: setup $(NB_00) ## recompute notebook 01's taxonomy here and pin it (data/pinned/; review with git diff)
	$(RUN_NB) 01_value_taxonomy -p taxonomy_mode recompute --stamp $(NB_01)
	$(PY) -m valuealign.pinning promote
