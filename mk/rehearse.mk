# Rehearsal of a GPU profile on CPU (issue 14): notebooks 02-04 with the profile's exact training
# and evaluation configuration (4-bit NF4 with double quantisation via bitsandbytes, the paged
# 8-bit AdamW, scheduler, gradient checkpointing, LoRA targets, max_length, eval settings),
# substituting only what valuealign.rehearsal.SUBSTITUTIONS lists (the bundled model, one step,
# item caps, rows per step); the list is computed, printed and written to
# executed/rehearse-<profile>/SUBSTITUTIONS.md. Reads notebooks 00-01's outputs (make nb-01).
#   make rehearse PROFILE=thesis-7b        make rehearse PROFILE=thesis-13b

.PHONY: rehearse

rehearse: $(STAMPS)/setup-done ## notebooks 02-04 of a GPU PROFILE on CPU (bundled model, few steps): make rehearse PROFILE=thesis-7b
	@test "$(PROFILE)" != smoke || { echo "make rehearse: name a GPU profile, e.g. PROFILE=thesis-7b" >&2; exit 2; }
	@test -f data/processed/items.parquet -a -f data/processed/taxonomy.parquet || $(MAKE) nb-01 PROFILE=smoke
	$(PY) -m valuealign.rehearsal $(CONFIG)
