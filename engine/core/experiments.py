"""Experiment assignment: a customer's arm, stable within one experiment and independent
across experiments.

The customer id is hashed with the experiment's own salt (its name), so a customer keeps
the arm of an experiment for as long as it runs, while the customers of one challenger
are not the customers of the next one: an unsalted hash would put the same share of
customers in every challenger's arm, and their history (what earlier challengers showed
them) in every comparison.
"""

from __future__ import annotations

import hashlib


def bucket(experiment: str, customer_id: str) -> float:
    """The customer's place in [0, 1) in ``experiment``: uniform, stable, and
    independent of its place in any other experiment."""
    digest = hashlib.blake2b(
        customer_id.encode(), digest_size=8, key=experiment.encode()[:64]
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_treatment(experiment: str, customer_id: str, share: float) -> bool:
    return bucket(experiment, customer_id) < share


def challenge_name(version: str) -> str:
    """The experiment a challenger model runs: one per challenger version."""
    return f"challenge:{version}"
