# Thesis targets: `make figures` rebuilds the cross-stage figures/tables from saved results
# (notebook 06, no re-training) and checks the LaTeX against figures/manifest.json;
# `make thesis` builds thesis/main.pdf with latexmk; `make thesis-deps` installs TeX Live
# from Debian's packages (the smallest set that builds the thesis; idempotent).

THESIS_DIR  := thesis
THESIS_PDF  := $(THESIS_DIR)/main.pdf
THESIS_SRC  := $(THESIS_DIR)/main.tex $(wildcard $(THESIS_DIR)/chapters/*.tex) $(THESIS_DIR)/references.bib
# Debian packages: latexmk + pdflatex/bibtex and what main.tex loads (latex-base: geometry,
# mathptmx, natbib, hyperref, url; latex-recommended: microtype, booktabs, caption, xcolor;
# fonts-recommended: the Times Type 1 fonts; science: siunitx; lmodern: Type 1 typewriter/sans,
# so no bitmap Type 3 fonts), and poppler-utils (pdffonts, pdftoppm) for checks and previews.
# Not texlive-latex-extra (+160 MB with texlive-pictures): main.tex avoids cleveref/xurl.
TEX_PACKAGES := latexmk texlive-latex-base texlive-latex-recommended texlive-fonts-recommended \
	texlive-science lmodern poppler-utils
LATEXMK     := latexmk -pdf -cd -interaction=nonstopmode -halt-on-error -file-line-error

figures: $(STAMPS)/setup-done ## rebuild summary figures/tables from saved results (notebook 06, no re-training) and check the thesis wiring
	$(RUN_NB) 06_thesis_figures --stamp $(NB_06)
	$(PY) -m valuealign.thesis check

thesis: $(STAMPS)/setup-done ## build thesis/main.pdf from figures/ (run `make all` first); fails on missing figures or unembedded fonts
	@command -v latexmk >/dev/null || { echo "latexmk not found: run 'make thesis-deps' (TeX Live from apt)" >&2; exit 1; }
	$(PY) -m valuealign.thesis check
	$(LATEXMK) $(THESIS_DIR)/main.tex
	$(PY) -m valuealign.thesis fonts $(THESIS_PDF)

thesis-deps: ## install TeX Live + poppler from Debian packages (apt-get; skips what is installed)
	@missing=$$(for p in $(TEX_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "thesis-deps: all installed ($(TEX_PACKAGES))"; exit 0; fi; \
	echo "thesis-deps: installing $$missing"; \
	SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	$$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing

.PHONY: thesis-clean
thesis-clean: ## remove LaTeX build files (keeps figures/)
	cd $(THESIS_DIR) && latexmk -C main.tex >/dev/null 2>&1 || true
