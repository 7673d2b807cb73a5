"""The design document's retrieval table: one row per selected trial."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmark_pipeline.selection.shapes import iter_trial_infos


def agreement_label(trial_info: Mapping[str, Any]) -> str:
    """``agree`` / ``only <source>`` / ``DISAGREE: study=ab12…``, then ``; 2 conflicting records`` when records
    of one trial conflict."""
    if trial_info.get("disagreements"):
        label = "DISAGREE: " + ", ".join(f"{d['source']}={d['trial_id'][:8]}" for d in trial_info["disagreements"])
    else:
        picks = [s for s, c in trial_info.get("candidates", {}).items() if c.get("pick")]
        label = "agree" if len(picks) > 1 else f"only {trial_info['source']}"
    conflicts = trial_info.get("conflicts") or []
    return label + (f"; {len(conflicts)} conflicting record(s)" if conflicts else "")


def format_selection_table(best_trials: Mapping[str, Any]) -> str:
    """Render a retrieval result as a fixed-width text table (backbone, variant, trial, metric, source, agreement)."""
    header = f"{'Backbone':<18} {'Variant':<8} {'Trial ID':<14} {'#':>3} {'Metric':>8} {'Source':<7} Agreement"
    lines = [header, "-" * len(header)]
    for info in iter_trial_infos(best_trials):
        number = "" if info.get("trial_number") is None else str(info["trial_number"])
        lines.append(
            f"{info['backbone']:<18} {info['variant']:<8} {info['trial_id'][:12]:<14} {number:>3} "
            f"{info['metric']:>8.4f} {info['source']:<7} {agreement_label(info)}"
        )
    return "\n".join(lines)
