"""Error classes that a stage module and the modules below it share.

Why a module of its own: the item split (:mod:`valuealign.splits`) sits below
:mod:`valuealign.datasets`, and scoring (:mod:`valuealign.inference`), the metrics
(:mod:`valuealign.metrics`) and the statistics (:mod:`valuealign.stats`) sit below
:mod:`valuealign.evaluation` and cannot import it; their errors derive from
:class:`EvaluationError`, so a notebook's ``except evaluation.EvaluationError`` around an
evaluation still catches a bad distribution or a tokenizer that cannot place an answer; likewise
``except datasets.DatasetBuildError`` catches a split that cannot be made, and
``except consultation.PolisFormatError`` a conversation the opinion groups
(:mod:`valuealign.polis_groups`) cannot be computed on.
"""

from __future__ import annotations


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file, column, run or parameter."""


class DatasetBuildError(ValueError):
    """Invalid input or parameters for the alignment datasets; the message names it."""


class PolisFormatError(ValueError):
    """A Polis export file has an unexpected layout or values; the message names file and column."""


class EmptyConversationError(PolisFormatError):
    """A conversation has no statements, no votes, or no participant left to analyse."""
