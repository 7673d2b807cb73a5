"""The selection layer's records, its exclusion reasons and the variant rule (benchmark_pipeline.selection.records,
benchmark_pipeline.contract).

Records are frozen and travel between the selection modules; the design document's dicts are made from them by
``to_dict()`` at the public API only, with the keys (and key order) the tables and asset metadata read. The
exclusion reasons are one enum whose values are the strings counted in ``trial_info["candidates"]``. The
variant of a record is decided by one function, whichever source holds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.benchmarking import keys
from benchmark_pipeline.selection import (
    SOURCE_PRIORITY,
    ExclusionReason,
    SourceScan,
    TrialCandidate,
    TrialPick,
    compare_sources,
    retrieve_best_trials,
    retrieve_from_disk,
    retrieve_from_mlflow,
    retrieve_from_study,
)
from benchmark_pipeline.selection._disk_source import DiskSource
from benchmark_pipeline.selection._mlflow_source import MlflowSource
from benchmark_pipeline.selection._scan_builder import ScanBuilder
from benchmark_pipeline.selection._study_source import StudySource
from benchmark_pipeline.selection.records import (
    QUALIFIED_REASONS,
    CrossReferences,
    Disagreement,
    DuplicateRunsConflict,
    Exclusion,
    SourceSummary,
    ValueMismatchConflict,
)

METRIC = "macro-f1"
HPO_CONFIG: dict[str, Any] = {"objective": {"metric": METRIC, "direction": "maximize"}}

#: Every exclusion reason as the sources counted it before the enum (docs/selection.md lists them).
REASON_STRINGS = {
    "deleted", "status_running", "status_scheduled", "status_failed", "status_killed", "missing_tag",
    "malformed_trial_number", "multi_objective_study", "state_running", "state_pruned", "state_fail",
    "state_waiting", "missing_attr", "missing_storage", "unreadable_storage", "missing_metrics_file",
    "unreadable_metrics_file", "missing_trial_meta", "unreadable_trial_meta", "malformed_trial_meta",
    "backbone_mismatch", "non_numeric_metric", "missing_trial_key_hash", "unsafe_value", "missing_metric",
    "non_finite_metric", "other_data_fingerprint",
}  # fmt: skip

#: A ``trial_info``'s keys, in the order ``retrieve_best_trials`` has always returned them.
TRIAL_INFO_KEYS = [
    "backbone", "variant", "trial_id", "trial_key_hash", "trial_number", "study_name", "study_key_hash",
    "metric_name", "metric", "direction", "source", "selection_scope", "hyperparameters", "sources_agree",
    "disagreements", "conflicts", "mlflow_consulted", "mlflow_not_consulted_reason", "candidates",
    "hpo_output_dir", "run_id", "trial_dir", "model_path", "model_uri",
]  # fmt: skip


def _key(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _candidate(source: str = "mlflow", trial: str = "t1", metric: float = 0.5, **fields: Any) -> TrialCandidate:
    return TrialCandidate(source, "bb", fields.pop("variant", "v1"), _key(trial), metric, **fields)


def _write_folder(hpo_dir: Path, backbone: str, number: int, metric: float, **meta: Any) -> Path:
    """A trial folder per the HPO contract; ``meta`` overrides ``trial_meta.json`` fields (``None`` drops one)."""
    study_key, trial_key = _key(f"study/{backbone}"), _key(f"{backbone}/{number}")
    folder = contract.trial_dir(hpo_dir, backbone, study_key, trial_key)
    folder.mkdir(parents=True)
    payload = {
        "backbone": backbone,
        "variant": "v1",
        "study_name": contract.study_name(backbone, "v1"),
        "study_key_hash": study_key,
        "trial_key_hash": trial_key,
        "trial_number": number,
        "mlflow_run_id": None,
        "hyperparameters": {"width": 16, "learning_rate": 0.01},
        **meta,
    }
    payload = {name: value for name, value in payload.items() if value is not None or name == "mlflow_run_id"}
    (folder / contract.TRIAL_META_FILE).write_text(json.dumps(payload), encoding="utf-8")
    (folder / contract.METRICS_FILE).write_text(json.dumps({METRIC: metric}), encoding="utf-8")
    return folder


def _retrieve(hpo_dir: Path, backbones: list[str], scope: str = "overall") -> dict[str, Any]:
    return retrieve_best_trials(
        backbone_values=backbones,
        hpo_experiments={},
        benchmark_experiment=None,
        selection_config={"hpo_output_dir": str(hpo_dir)},
        hpo_config=HPO_CONFIG,
        data_config={},
        root_dir=hpo_dir,
        environment="test",
        selection_scope=scope,
        mlflow_client=None,
    )


# ===================================================================================== exclusion reasons


def test_exclusion_reason_values_are_the_strings_counted_before() -> None:
    assert {reason.value for reason in ExclusionReason} == REASON_STRINGS
    for reason in ExclusionReason:
        assert str(reason) == reason.value and f"{reason}" == reason.value
        assert json.dumps({reason: 1}) == json.dumps({reason.value: 1})
    assert {r.value for r in QUALIFIED_REASONS} == {"missing_tag", "missing_attr", "unsafe_value"}


def test_qualified_reasons_are_counted_with_their_field_and_only_they_take_one() -> None:
    assert Exclusion(ExclusionReason.UNSAFE_VALUE, field=contract.TAG_TRIAL_KEY_HASH).label == (
        "unsafe_value:code.trial_key_hash"
    )
    assert (
        Exclusion(ExclusionReason.MISSING_TAG, "v1", field=contract.TAG_BACKBONE).label == "missing_tag:code.backbone"
    )
    assert Exclusion(ExclusionReason.MISSING_ATTR, field="trial_key_hash").label == "missing_attr:trial_key_hash"
    assert Exclusion(ExclusionReason.MISSING_METRIC).label == "missing_metric"
    with pytest.raises(ValueError, match="unsafe_value"):
        Exclusion(ExclusionReason.UNSAFE_VALUE)
    with pytest.raises(ValueError, match="missing_metric"):
        Exclusion(ExclusionReason.MISSING_METRIC, field="macro-f1")


def test_every_mlflow_status_and_optuna_state_but_the_finished_one_has_a_reason() -> None:
    statuses = [RunStatus.to_string(s) for s in RunStatus.all_status() if RunStatus.to_string(s) != "FINISHED"]
    assert {ExclusionReason.of_run_status(s).value for s in statuses} == {
        "status_running", "status_scheduled", "status_failed", "status_killed",
    }  # fmt: skip
    states = [s.name for s in optuna.trial.TrialState if s != optuna.trial.TrialState.COMPLETE]
    assert {ExclusionReason.of_trial_state(s).value for s in states} == {
        "state_running", "state_pruned", "state_fail", "state_waiting",
    }  # fmt: skip


def test_counted_exclusions_are_plain_strings_in_trial_info(tmp_path: Path) -> None:
    """The counts reach asset metadata and error messages: their keys print as the strings, not as enum members."""
    _write_folder(tmp_path, "bb", 0, 0.5)
    _write_folder(tmp_path, "bb", 1, 0.7, variant="v'1")
    _write_folder(tmp_path, "bb", 2, 0.9, trial_key_hash=None)
    info = _retrieve(tmp_path, ["bb"])["bb"]
    ineligible = info["candidates"]["disk"]["ineligible"]
    assert ineligible == {"missing_trial_key_hash": 1, "unsafe_value:variant": 1}
    assert all(type(reason) is str for reason in ineligible)
    assert repr(ineligible) == "{'missing_trial_key_hash': 1, 'unsafe_value:variant': 1}"


# ============================================================================================ records


def test_records_are_frozen() -> None:
    scan = SourceScan("mlflow", "bb", available=True, eligible=[_candidate()], looked_at=["somewhere"])
    for record, name in [
        (scan, "eligible"),
        (_candidate(), "metric"),
        (Disagreement("study", "t", 0.1, None), "source"),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, name, None)
    assert scan.eligible == (_candidate(),) and scan.looked_at == ("somewhere",), "lists are stored as tuples"


def test_superseding_returns_a_new_scan_and_leaves_the_first_unchanged() -> None:
    better, worse = _candidate(trial="t1", metric=0.9, run_id="r1"), _candidate(trial="t2", metric=0.5, run_id="r2")
    scan = SourceScan("mlflow", "bb", available=True, eligible=[better, worse])
    resolved = scan.with_superseded([(better.trial_id, "r1")])
    assert scan.best("maximize") == better and scan.superseded == frozenset()
    assert resolved.best("maximize") == worse and resolved.eligible == scan.eligible


def test_scan_builder_counts_exclusions_per_label_and_variant() -> None:
    builder = ScanBuilder("disk", "bb", looked_at=["here"])
    builder.add(_candidate("disk"))
    builder.exclude(ExclusionReason.MISSING_METRIC, "v1")
    builder.add(Exclusion(ExclusionReason.MISSING_METRIC, "v2"))
    builder.exclude(ExclusionReason.UNSAFE_VALUE, field="variant")
    scan = builder.build(error="partly unreadable")
    assert (scan.available, scan.error, scan.eligible, scan.looked_at) == (
        True,
        "partly unreadable",
        (_candidate("disk"),),
        ("here",),
    )
    assert scan.ineligible_counts() == {"missing_metric": 2, "unsafe_value:variant": 1}
    assert scan.ineligible_counts("v1") == {"missing_metric": 1, "unsafe_value:variant": 1}
    assert builder.build(available=False).available is False


def test_conflict_and_disagreement_dicts_keep_their_keys_in_order() -> None:
    duplicate = DuplicateRunsConflict(
        trial_id="t", variant="v1", run_ids=("a", "b"), values=(0.9, 0.8), with_model=(False, True),
        counted_run_id="b", counted_value=0.8, rule="the only run(s) with model artifacts",
    )  # fmt: skip
    assert duplicate.to_dict() == {
        "kind": "duplicate_runs", "source": "mlflow", "trial_id": "t", "variant": "v1", "run_ids": ["a", "b"],
        "values": [0.9, 0.8], "with_model": [False, True], "counted_run_id": "b", "counted_value": 0.8,
        "rule": "the only run(s) with model artifacts",
    }  # fmt: skip
    assert list(duplicate.to_dict()) == [
        "kind", "source", "trial_id", "variant", "run_ids", "values", "with_model", "counted_run_id",
        "counted_value", "rule",
    ]  # fmt: skip
    mismatch = ValueMismatchConflict(
        source="disk", trial_id="t", variant="v1", run_ids=("b",), values=(0.81,), locations=("/x",),
        counted_source="mlflow", counted_value=0.8,
    )  # fmt: skip
    assert list(mismatch.to_dict()) == [
        "kind", "source", "trial_id", "variant", "run_ids", "values", "locations", "counted_source", "counted_value",
    ]  # fmt: skip
    assert mismatch.to_dict()["kind"] == "value_mismatch" and type(mismatch.to_dict()["kind"]) is str
    first, other = _candidate(trial="t1", run_id="r1"), _candidate(trial="t2", metric=0.7)
    assert compare_sources({"mlflow": first, "study": other, "disk": first}) == [
        {"source": "study", "trial_id": other.trial_id, "metric": 0.7, "run_id": None}
    ]
    assert compare_sources({"mlflow": None, "study": first, "disk": first}) == []


def test_source_summary_dict_and_a_fresh_copy_each_time() -> None:
    pick = _candidate(trial_number=3, run_id="r1")
    scan = SourceScan("mlflow", "bb", True, eligible=[pick], ineligible={("missing_metric", None): 2})
    summary = SourceSummary.of(scan, pick, "v1")
    as_dict = summary.to_dict()
    assert as_dict == {
        "available": True,
        "error": None,
        "looked_at": [],
        "eligible": 1,
        "ineligible": {"missing_metric": 2},
        "pick": {"trial_id": pick.trial_id, "metric": 0.5, "run_id": "r1", "trial_number": 3, "variant": "v1"},
    }
    as_dict["looked_at"].append("mutated")
    as_dict["ineligible"]["missing_metric"] = 99
    assert summary.to_dict()["looked_at"] == [] and summary.to_dict()["ineligible"] == {"missing_metric": 2}


@pytest.mark.parametrize("scope", ["overall", "per_variant"])
def test_retrieval_returns_trial_infos_with_the_documented_keys_in_order(tmp_path: Path, scope: str) -> None:
    _write_folder(tmp_path, "bb", 0, 0.5)
    best = _write_folder(tmp_path, "bb", 1, 0.7)
    _write_folder(tmp_path, "bb", 2, 0.6, variant="v2", study_name="bb_v2")
    result = _retrieve(tmp_path, ["bb"], scope)
    infos = [result["bb"]] if scope == "overall" else [result["bb"]["v1"], result["bb"]["v2"]]
    if scope == "per_variant":
        assert list(result["bb"]) == ["v1", "v2"]
    for info in infos:
        assert list(info) == TRIAL_INFO_KEYS
        assert list(info["candidates"]) == list(SOURCE_PRIORITY)
        assert type(info["disagreements"]) is list and type(info["conflicts"]) is list
        assert list(info["candidates"]["disk"]["pick"]) == ["trial_id", "metric", "run_id", "trial_number", "variant"]
    overall = infos[0]
    assert (overall["trial_number"], overall["metric"], overall["source"]) == (1, 0.7, "disk")
    assert overall["trial_dir"] == str(best) and overall["hpo_output_dir"] == str(tmp_path)
    assert (overall["mlflow_consulted"], overall["mlflow_not_consulted_reason"]) == (
        False,
        "no MLflow tracking URI configured",
    )


def test_a_trial_pick_to_dict_is_a_fresh_trial_info_each_time(tmp_path: Path) -> None:
    _write_folder(tmp_path, "bb", 0, 0.5)
    scans = {
        "mlflow": SourceScan("mlflow", "bb", available=False, error="down"),
        "study": SourceScan("study", "bb", available=False),
        "disk": retrieve_from_disk("bb", tmp_path, HPO_CONFIG),
    }
    chosen = scans["disk"].best("maximize")
    assert chosen is not None
    pick = TrialPick(
        chosen=chosen, source="disk", metric_name=METRIC, direction="maximize", selection_scope="overall",
        disagreements=(), conflicts=(), mlflow_consulted=False, mlflow_not_consulted_reason="down",
        candidates={s: SourceSummary.of(scans[s], scans[s].best("maximize"), None) for s in SOURCE_PRIORITY},
        hpo_output_dir=str(tmp_path), references=CrossReferences(None, chosen.trial_dir, None, None),
    )  # fmt: skip
    info = pick.to_dict()
    assert list(info) == TRIAL_INFO_KEYS
    assert (info["trial_id"], info["trial_key_hash"], info["sources_agree"]) == (chosen.trial_id, chosen.trial_id, True)
    info["hyperparameters"]["width"] = 0
    info["candidates"]["disk"]["looked_at"].clear()
    assert pick.to_dict()["hyperparameters"]["width"] == 16 and pick.to_dict()["candidates"]["disk"]["looked_at"]
    assert chosen.hyperparameters["width"] == 16


# ================================================================================= sources (TrialSource)


def test_each_source_names_itself_by_its_priority_rank(tmp_path: Path) -> None:
    sources = [
        MlflowSource(None, {}, METRIC),
        StudySource(tmp_path, "maximize"),
        DiskSource(tmp_path, METRIC),
    ]
    assert tuple(source.name for source in sources) == SOURCE_PRIORITY
    for source in sources:
        scan = source.scan("bb")
        assert (scan.source, scan.backbone, scan.available) == (source.name, "bb", False)
        assert scan.error


# ==================================================================================== the variant rule


@pytest.mark.parametrize(
    ("declared", "name", "variant"),
    [
        ("v7", "bb_v2", "v7"),  # a declared variant wins over the name
        ("", "bb_v2", "v2"),  # an empty one counts as none
        (None, "bb_v2", "v2"),
        (None, "bb_v10", "v10"),
        (None, "bb", contract.DEFAULT_VARIANT),
        (None, "bb_v2\n", contract.DEFAULT_VARIANT),  # \Z, not $
        (None, "bb_v\u0662", contract.DEFAULT_VARIANT),  # an Arabic-Indic digit is no variant number
        (None, "bb_large", contract.DEFAULT_VARIANT),
        (None, None, contract.DEFAULT_VARIANT),
        (None, "", contract.DEFAULT_VARIANT),
    ],
)
def test_variant_rule(declared: str | None, name: str | None, variant: str) -> None:
    assert contract.variant_of(declared, name) == variant


def test_default_variant_has_one_home() -> None:
    assert contract.DEFAULT_VARIANT == "default"
    assert keys.DEFAULT_VARIANT is contract.DEFAULT_VARIANT


def _study_trial(backbone: str, study_name: str, variant_attr: str | None, storage: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    study.set_user_attr(contract.STUDY_ATTR_BACKBONE, backbone)
    if variant_attr is not None:
        study.set_user_attr(contract.STUDY_ATTR_VARIANT, variant_attr)
    study.add_trial(
        optuna.trial.create_trial(
            value=0.5, params={}, distributions={}, user_attrs={contract.ATTR_TRIAL_KEY_HASH: _key(study_name)}
        )
    )


def test_every_source_applies_the_same_variant_rule(mlflow_client: MlflowClient, tmp_path: Path) -> None:
    """One record per case in each source: declared variant, variant from the study name, neither."""
    backbone = f"vr{uuid.uuid4().hex[:8]}"
    cases = [("v7", f"{backbone}_v2", "v7"), (None, f"{backbone}_v3", "v3"), (None, backbone, "default")]
    experiment_id = mlflow_client.create_experiment(f"variant-rule-{backbone}")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    for number, (declared, name, _) in enumerate(cases):
        tags = {
            contract.TAG_BACKBONE: backbone,
            contract.TAG_STUDY_NAME: name,
            contract.TAG_STUDY_KEY_HASH: _key(name),
            contract.TAG_TRIAL_KEY_HASH: _key(f"{name}/{number}"),
        }
        if declared is not None:
            tags[contract.TAG_VARIANT] = declared
        run_id = mlflow_client.create_run(experiment_id, tags=tags).info.run_id
        mlflow_client.log_batch(run_id, metrics=[Metric(METRIC, 0.5, 0, 0)])
        mlflow_client.set_terminated(run_id, "FINISHED")
        _study_trial(backbone, name, declared, storage)
        _write_folder(tmp_path / "hpo", backbone, number, 0.5, variant=declared, study_name=name)

    expected = sorted(variant for _, _, variant in cases)
    mlflow = retrieve_from_mlflow(backbone, {backbone: {"id": experiment_id}}, HPO_CONFIG, mlflow_client)
    study = retrieve_from_study(backbone, tmp_path / "none", HPO_CONFIG, storages=[storage])
    disk = retrieve_from_disk(backbone, tmp_path / "hpo", HPO_CONFIG)
    for scan in (mlflow, study, disk):
        assert scan.available and not scan.ineligible, scan
        assert sorted(c.variant for c in scan.eligible) == expected, scan.source
