"""What a place trials are read from provides to retrieval: :class:`TrialSource`.

The sources are :class:`~benchmark_pipeline.selection._mlflow_source.MlflowSource`,
:class:`~benchmark_pipeline.selection._study_source.StudySource` and
:class:`~benchmark_pipeline.selection._disk_source.DiskSource`, one module each. A new source is one more such
module, its name in :data:`~benchmark_pipeline.selection.records.SOURCE_PRIORITY` (which fixes its rank), and
its construction in ``trial_retrieval._sources``.
"""

from __future__ import annotations

from typing import Protocol

from benchmark_pipeline.selection.records import SourceScan


class TrialSource(Protocol):
    """One source of trials for one retrieval, built with everything the retrieval knows (objective, data
    fingerprint, folders, clients); :meth:`scan` is then called once per backbone.

    Invariants every implementation keeps:

    * Read-only: a scan never writes to the store it reads (a ``sqlite:`` storage whose file is missing is
      not even opened, since opening it would create it).
    * Total: every record looked at is either an eligible
      :class:`~benchmark_pipeline.selection.records.TrialCandidate` or counted under an
      :class:`~benchmark_pipeline.selection.records.ExclusionReason`; none is dropped silently.
    * Safe identities: every identity a candidate carries (backbone, variant, trial and study key, run id)
      passed :func:`~benchmark_pipeline.selection.records.unsafe_field`.
    * Failure is data: an unreachable or missing store gives a scan with ``available=False`` and an ``error``
      saying why, never an exception; the one exception is a contradiction of the configuration
      (:class:`~benchmark_pipeline.selection._study_source.StudyDirectionError`).
    * Order-free: which candidate wins is decided by the shared
      :func:`~benchmark_pipeline.selection.records.tie_break_key`, not by the order a store lists records in.
    """

    @property
    def name(self) -> str:
        """The source's name, one of :data:`~benchmark_pipeline.selection.records.SOURCE_PRIORITY`."""
        ...

    def scan(self, backbone: str) -> SourceScan:
        """Every record of ``backbone`` this source holds, classified."""
        ...
