"""The alignment rows every stage exchanges: their columns per method and KTO's class weights.

Notebook 02 writes survey rows, notebook 05 consultation rows, notebook 03 trains on both; the
row layout is one contract between them. Why here and not in one stage: a column renamed in
the builder would otherwise be found missing only when a trainer reads it.

A row's prompt is a list of chat messages (``valuealign.prompts``), its answer an assistant
message list; ``item_id``, ``paraphrase_id``, ``option_order`` and ``value_set`` say where it
came from (provenance, never trained on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

METHODS: tuple[str, ...] = ("sft", "dpo", "kto", "dist")

# The columns trl (and the dist trainer) read per method; other columns are provenance.
TRAINER_COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "completion"),
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "dist": ("prompt", "option_letters", "target_shares"),
}
PROVENANCE_COLUMNS: tuple[str, ...] = ("item_id", "paraphrase_id", "option_order", "value_set")
# Every column of a survey row (notebook 02), in the order they are written; consultation rows
# (notebook 05) add their conversation's columns after these.
ROW_COLUMNS: dict[str, list[str]] = {
    "sft": [*TRAINER_COLUMNS["sft"], *PROVENANCE_COLUMNS],
    "dpo": [*TRAINER_COLUMNS["dpo"], "chosen_share", "rejected_share", *PROVENANCE_COLUMNS],
    "kto": [*TRAINER_COLUMNS["kto"], "share", *PROVENANCE_COLUMNS],
    "dist": [*TRAINER_COLUMNS["dist"], *PROVENANCE_COLUMNS],
}


class KtoBalanceError(ValueError):
    """KTO rows of only one class (all desirable or all undesirable): no weights can balance them."""


def kto_class_weights(n_desirable: int, n_undesirable: int, desirable: float = 0.0,
                      undesirable: float = 0.0) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for trl's ``KTOConfig``.

    A weight given (> 0) is kept; a 0 weight is derived so that the weighted counts balance
    (``desirable_weight * n_desirable == undesirable_weight * n_undesirable``): with both 0 the
    majority class gets weight 1 and the minority is up-weighted. The KTO paper advises keeping
    (w_d * n_d) / (w_u * n_u) within [1, 4/3]; 1 is its centre of the safe side.
    """
    n_d, n_u = int(n_desirable), int(n_undesirable)
    if n_d == 0 or n_u == 0:
        raise KtoBalanceError(f"KTO needs desirable and undesirable rows; got {n_d} desirable, {n_u} undesirable")
    if desirable > 0 and undesirable > 0:
        return float(desirable), float(undesirable)
    if desirable > 0:
        return float(desirable), desirable * n_d / n_u
    if undesirable > 0:
        return undesirable * n_u / n_d, float(undesirable)
    return (1.0, n_d / n_u) if n_d >= n_u else (n_u / n_d, 1.0)


def kto_balance(labels: Sequence[bool]) -> dict[str, Any]:
    """Desirable/undesirable counts of KTO rows and the weights that balance them (trl's names),
    as written to a value set's ``kto_weights.json`` by notebooks 02 and 05.

    The rarer class gets weight count_other / count_rare, the other weight 1
    (:func:`kto_class_weights` with no weight given). :class:`KtoBalanceError` if one class is empty.
    """
    n_d = sum(1 for x in labels if x)
    n_u = len(labels) - n_d
    w_d, w_u = kto_class_weights(n_d, n_u)
    return {"n_desirable": n_d, "n_undesirable": n_u, "desirable_ratio": round(n_d / len(labels), 6),
            "desirable_weight": round(w_d, 6), "undesirable_weight": round(w_u, 6)}
