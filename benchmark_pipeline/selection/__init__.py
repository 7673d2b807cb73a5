"""Best-trial selection across MLflow, Optuna studies and trial folders."""

from benchmark_pipeline.selection.records import (
    SOURCE_PRIORITY,
    ExclusionReason,
    SourceScan,
    TrialCandidate,
    TrialPick,
    tie_break_key,
)
from benchmark_pipeline.selection.report import format_selection_table
from benchmark_pipeline.selection.shapes import iter_trial_infos, map_trial_infos
from benchmark_pipeline.selection.trial_finder import find_best_trials_for_backbones
from benchmark_pipeline.selection.trial_retrieval import (
    SELECTION_SCOPES,
    NoTrialsFoundError,
    StudyDirectionError,
    compare_sources,
    retrieve_best_trials,
    retrieve_configured_best_trials,
    retrieve_from_disk,
    retrieve_from_mlflow,
    retrieve_from_study,
)
from benchmark_pipeline.selection.trial_source import TrialSource

__all__ = [
    "SELECTION_SCOPES",
    "SOURCE_PRIORITY",
    "ExclusionReason",
    "NoTrialsFoundError",
    "SourceScan",
    "StudyDirectionError",
    "TrialCandidate",
    "TrialPick",
    "TrialSource",
    "compare_sources",
    "find_best_trials_for_backbones",
    "format_selection_table",
    "iter_trial_infos",
    "map_trial_infos",
    "retrieve_best_trials",
    "retrieve_configured_best_trials",
    "retrieve_from_disk",
    "retrieve_from_mlflow",
    "retrieve_from_study",
    "tie_break_key",
]
