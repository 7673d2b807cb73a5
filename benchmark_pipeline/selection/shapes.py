"""The two shapes of a retrieval result, handled in one place.

``"overall"``: ``{backbone: trial_info}``; ``"per_variant"``: ``{backbone: {variant: trial_info}}``. A
``trial_info`` is recognised by its ``trial_id`` key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any


def is_trial_info(entry: Any) -> bool:
    return isinstance(entry, Mapping) and "trial_id" in entry


def iter_trial_infos(best_trials: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every ``trial_info`` of either shape, in backbone order then sorted variant order."""
    for backbone in best_trials:
        entry = best_trials[backbone]
        if is_trial_info(entry):
            yield entry
        else:
            for variant in sorted(entry):
                yield entry[variant]


def map_trial_infos(
    best_trials: Mapping[str, Any], transform: Callable[[dict[str, Any]], Any | None]
) -> dict[str, Any]:
    """The same shape with each ``trial_info`` replaced by ``transform(trial_info)``; entries for which it
    returns ``None`` are dropped (and a backbone left with no variant is dropped too)."""
    mapped: dict[str, Any] = {}
    for backbone, entry in best_trials.items():
        if is_trial_info(entry):
            value = transform(entry)
            if value is not None:
                mapped[backbone] = value
        else:
            inner = {variant: transform(info) for variant, info in sorted(entry.items())}
            inner = {variant: value for variant, value in inner.items() if value is not None}
            if inner:
                mapped[backbone] = inner
    return mapped
