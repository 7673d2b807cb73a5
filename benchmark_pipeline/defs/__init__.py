"""The Dagster layer: a thin shell over the Dagster-free core. ``benchmark_pipeline.definitions`` composes it."""
