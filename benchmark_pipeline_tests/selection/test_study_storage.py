"""Opening Optuna storages (``selection/study_storage.py``) on real sqlite files: the schema check Optuna runs on
every open is done with the schema head read once per process, and a storage of another schema version still
fails with Optuna's own message."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest

from benchmark_pipeline.selection.study_storage import close_storage, open_rdb_storage


def _study_file(path: Path) -> str:
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url)
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()
    return url


def test_a_current_storage_opens_and_reads(tmp_path: Path) -> None:
    url = _study_file(tmp_path / "study.db")
    for _ in range(2):  # the second open uses the cached schema head
        storage = open_rdb_storage(url, attempts=1)
        assert storage.get_current_version() == storage.get_head_version()
        assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2
        close_storage(storage)


def test_a_storage_of_another_schema_version_fails_with_optunas_message(tmp_path: Path) -> None:
    url = _study_file(tmp_path / "study.db")
    with sqlite3.connect(tmp_path / "study.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")
    with pytest.raises(RuntimeError, match=r"no longer compatible with the table schema.*optuna storage upgrade"):
        open_rdb_storage(url, attempts=1)
