"""The embedded demo: one user of the core, at its edge.

A synthetic token-classification dataset, three small PyTorch backbones and Optuna sweeps that really
train them and record every trial as any team's HPO code would: MLflow runs, an Optuna study and a trial
folder, following ``docs/hpo-contract.md``. It uses only public modules of the core
(:mod:`benchmark_pipeline.contract`, :mod:`~benchmark_pipeline.hashing`, :mod:`~benchmark_pipeline.config`,
:mod:`~benchmark_pipeline.tracking`, :mod:`~benchmark_pipeline.benchmarking.metrics`), and the core imports
nothing of it (an import-linter contract in ``pyproject.toml`` keeps it so).

The benchmark reaches the demo's models the way it reaches anyone's: ``model.onnx`` for ONNX Runtime and,
for PyTorch, the ``state_dict`` in ``model.pt`` through the factory named in the demo config
(``benchmark_config.pytorch.model_factory: benchmark_pipeline.demo.models:load_trial_model``).

``python -m benchmark_pipeline.demo pairs|backbones|summary`` serves ``make demo``.
"""
