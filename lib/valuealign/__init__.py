"""valuealign: the shared library of the value-alignment research compendium.

One module per pipeline stage (surveys, taxonomy, datasets, training, evaluation,
consultation, sweep) plus shared ones (paths, config, provenance, plotting, models).
Notebooks in ``notebooks/`` narrate; the logic they need lives here, with tests.
"""

__version__ = "0.1.0"
