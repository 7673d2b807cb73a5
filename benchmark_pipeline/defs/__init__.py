"""The Dagster layer: a thin shell over the Dagster-free core. ``benchmark_pipeline.definitions`` composes it."""

import warnings

import dagster as dg

# Two Dagster features this layer relies on on purpose, marked preview / beta in 1.13: per-partition asset
# checks (``AssetCheckSpec(partitions_def=...)``) and ``BackfillPolicy.single_run()``. Their warnings would
# print on every load of the code location; the choice is documented in docs/workflow.md.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
