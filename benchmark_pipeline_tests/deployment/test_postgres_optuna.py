"""Optuna on a real PostgreSQL server: one bounded pool per storage URL for a whole retrieval (issue #13).

The database holds 204 studies, as the team database that ran out of connections did: 4 of the two retrieved
backbones and 200 of other backbones.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from benchmark_pipeline import contract
from benchmark_pipeline.selection.study_storage import MAX_OVERFLOW, POOL_SIZE, close_storage, open_rdb_storage
from benchmark_pipeline.selection.trial_retrieval import retrieve_best_trials
from benchmark_pipeline_tests.postgres_server import PostgresServer

BACKBONES = ["bilstm", "tiny_transformer"]
OTHER_STUDIES = 200
HPO_CONFIG = {"objective": {"metric": "macro-f1", "direction": "maximize"}}
DATA_CONFIG = {"name": "synthetic-ner", "version": "1"}


def _fill_team_database(url: str) -> dict[str, float]:
    """2 backbones x 2 variants with 3 COMPLETE trials each, and 200 studies of other backbones; returns
    the best value per backbone."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_rdb_storage(url)
    best: dict[str, float] = {}
    try:
        for index, backbone in enumerate(BACKBONES):
            for variant in ("v1", "v2"):
                study = optuna.create_study(
                    study_name=contract.study_name(backbone, variant), storage=storage, direction="maximize"
                )
                study.set_user_attr(contract.STUDY_ATTR_BACKBONE, backbone)
                study.set_user_attr(contract.STUDY_ATTR_VARIANT, variant)
                for number in range(3):
                    value = 0.5 + 0.1 * number + 0.01 * index + (0.05 if variant == "v2" else 0.0)
                    study.add_trial(
                        optuna.trial.create_trial(
                            value=value,
                            params={"lr": 0.01 * (number + 1)},
                            distributions={"lr": optuna.distributions.FloatDistribution(0.001, 0.1)},
                            user_attrs={contract.ATTR_TRIAL_KEY_HASH: f"{backbone}-{variant}-{number}".ljust(16, "0")},
                        )
                    )
                    best[backbone] = max(best.get(backbone, 0.0), value)
        for number in range(OTHER_STUDIES):
            other = optuna.create_study(study_name=f"team{number:03d}_v1", storage=storage, direction="maximize")
            other.set_user_attr(contract.STUDY_ATTR_BACKBONE, f"team{number:03d}")
    finally:
        close_storage(storage)
    return best


def test_a_retrieval_over_204_studies_opens_at_most_one_bounded_pool_per_url(
    postgres_server: PostgresServer, tmp_path: Path, mlflow_client
) -> None:
    database = postgres_server.create_database("optuna_team")
    url = postgres_server.url(database)  # a plain postgresql:// URL, as users write it (psycopg 3)
    best = _fill_team_database(url)
    counting = open_rdb_storage(url)
    assert len(counting.get_all_studies()) == 4 + OTHER_STUDIES
    close_storage(counting)
    assert postgres_server.connections_to(database) == 0

    offset = postgres_server.log_offset()
    result = retrieve_best_trials(
        backbone_values=BACKBONES,
        hpo_experiments={},
        benchmark_experiment=None,
        selection_config={"hpo_output_dir": str(tmp_path / "hpo"), "optuna_storages": [url]},
        hpo_config=HPO_CONFIG,
        data_config=DATA_CONFIG,
        root_dir=tmp_path,
        environment="test",
        selection_scope="per_variant",
        mlflow_client=mlflow_client,
    )
    opened = postgres_server.connections_opened(database, offset)
    # Every study of both backbones was read (through the one storage) ...
    assert sorted(result) == BACKBONES
    for backbone in BACKBONES:
        assert sorted(result[backbone]) == ["v1", "v2"]
        assert result[backbone]["v2"]["metric"] == pytest.approx(best[backbone])
        assert result[backbone]["v2"]["source"] == "study"
    # ... with at most one pool's worth of connections for the whole retrieval (docs/deployment.md), where a
    # storage per study opened hundreds; and none is left open afterwards.
    print(f"connections opened by one retrieval over {4 + OTHER_STUDIES} studies: {opened}")
    assert 1 <= opened <= POOL_SIZE + MAX_OVERFLOW, f"{opened} connections opened"
    assert postgres_server.connections_to(database) == 0
