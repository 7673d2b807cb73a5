"""The mutable side of a :class:`~benchmark_pipeline.selection.records.SourceScan`, used by a source while it
classifies records; ``build()`` freezes what it collected."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from benchmark_pipeline.selection.records import Exclusion, ExclusionReason, SourceScan, TrialCandidate


class ScanBuilder:
    """Eligible candidates and counted exclusions of one source for one backbone, in the order found."""

    def __init__(self, source: str, backbone: str, looked_at: Iterable[str] = ()) -> None:
        self.source = source
        self.backbone = backbone
        self.looked_at = list(looked_at)
        self._eligible: list[TrialCandidate] = []
        self._ineligible: Counter[tuple[str, str | None]] = Counter()

    def add(self, outcome: TrialCandidate | Exclusion) -> None:
        """Record one classified item: an eligible candidate, or an exclusion to count."""
        if isinstance(outcome, Exclusion):
            self._ineligible[(outcome.label, outcome.variant)] += 1
        else:
            self._eligible.append(outcome)

    def exclude(self, reason: ExclusionReason, variant: str | None = None, *, field: str | None = None) -> None:
        self.add(Exclusion(reason, variant, field))

    def build(self, *, available: bool = True, error: str | None = None) -> SourceScan:
        return SourceScan(
            self.source,
            self.backbone,
            available=available,
            error=error,
            eligible=self._eligible,
            ineligible=self._ineligible,
            looked_at=self.looked_at,
        )
