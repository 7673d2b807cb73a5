"""The benchmark key: golden values, sensitivity to every component, safety, parsing, and the cache file name.

Pure functions only (no server): the key's agreement across retrieval sources is tested with real trials in
``test_benchmarking.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark_pipeline.benchmarking.cache import cache_path, read_cache_entry, write_cache_entry
from benchmark_pipeline.benchmarking.keys import (
    MAX_COMPONENT_LENGTH,
    BenchmarkKeyParts,
    build_benchmark_key,
    compute_config_hash,
    compute_data_fingerprint,
    key_for_trial,
    parse_benchmark_key,
)
from benchmark_pipeline_tests.builders import complete_result

DATA_CONFIG: dict[str, Any] = {
    "name": "synthetic-ner",
    "version": "1",
    "seed": 13,
    "vocab_size": 64,
    "max_length": 12,
    "train_size": 96,
    "validation_size": 32,
    "test_size": 32,
    "local_path": None,
}
BENCHMARK_CONFIG: dict[str, Any] = {
    "backends": ["onnxruntime", "pytorch"],
    "device": "cpu",
    "batch_sizes": [1, 4],
    "max_length": 12,
    "warmup": 1,
    "iterations": 3,
    "min_duration_s": 0.0,
    "intra_op_threads": 1,
}
RUN_ID = "0123456789abcdef0123456789abcdef"
TRIAL_ID = "ffffffff" + "e" * 56

#: Computed once from the inputs above and pasted: any change to hashing, canonical JSON or key layout
#: silently invalidates every stored benchmark, so it must show up here.
GOLDEN_KEY = (
    "tiny_transformer:v1:0123456789abcdef0123456789abcdef:"
    "ffffffffeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee:1-e13200f7446e55fd:a2e8cfd2374001d7"
)
GOLDEN_DEFAULTS_KEY = "bilstm:default:unknown:abc123:1-e13200f7446e55fd:a2e8cfd2374001d7"


def key(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "backbone": "tiny_transformer",
        "variant": "v1",
        "run_id": RUN_ID,
        "trial_id": TRIAL_ID,
        "data_config": DATA_CONFIG,
        "benchmark_config": BENCHMARK_CONFIG,
    }
    args.update(overrides)
    return build_benchmark_key(**args)


# ------------------------------------------------------------------------------------------ golden values


def test_golden_key() -> None:
    assert key() == GOLDEN_KEY


def test_golden_key_with_defaults() -> None:
    assert build_benchmark_key("bilstm", None, None, "abc123", DATA_CONFIG, BENCHMARK_CONFIG) == GOLDEN_DEFAULTS_KEY


def test_variant_none_or_empty_is_default_and_run_id_none_or_empty_is_unknown() -> None:
    parts = parse_benchmark_key(key(variant=None, run_id=None))
    assert (parts.variant, parts.run_id) == ("default", "unknown")
    assert key(variant="", run_id="") == key(variant=None, run_id=None) == key(variant="default", run_id="unknown")


def test_key_components_are_the_fingerprint_and_config_hash() -> None:
    parts = parse_benchmark_key(GOLDEN_KEY)
    assert parts == BenchmarkKeyParts(
        "tiny_transformer",
        "v1",
        RUN_ID,
        TRIAL_ID,
        compute_data_fingerprint(DATA_CONFIG),
        compute_config_hash(BENCHMARK_CONFIG),
    )
    assert parts.data_fingerprint.startswith("1-") and len(parts.data_fingerprint) == 2 + 16
    assert len(parts.benchmark_config_hash) == 16


def test_key_for_trial_reads_a_trial_info() -> None:
    info = {
        "backbone": "tiny_transformer",
        "variant": "v1",
        "run_id": RUN_ID,
        "trial_id": TRIAL_ID,
        "metric": 0.5,
        "source": "disk",
    }
    assert key_for_trial(info, DATA_CONFIG, BENCHMARK_CONFIG) == GOLDEN_KEY
    assert (
        key_for_trial({"backbone": "bilstm", "trial_id": "abc123"}, DATA_CONFIG, BENCHMARK_CONFIG)
        == GOLDEN_DEFAULTS_KEY
    )


# ------------------------------------------------------------------------------------- what changes the key


@pytest.mark.parametrize(
    ("component", "value"),
    [("backbone", "bilstm"), ("variant", "v2"), ("run_id", "f" * 32), ("trial_id", "0" * 64)],
)
def test_key_changes_with_each_identity_component(component: str, value: str) -> None:
    assert key(**{component: value}) != GOLDEN_KEY


DATA_CHANGES = {
    "name": "other-ner",
    "version": "2",
    "seed": 14,
    "vocab_size": 65,
    "max_length": 13,
    "train_size": 97,
    "validation_size": 33,
    "test_size": 33,
}


def test_every_data_config_field_is_covered() -> None:
    assert set(DATA_CHANGES) == set(DATA_CONFIG) - {"local_path"}


@pytest.mark.parametrize(("field", "value"), sorted(DATA_CHANGES.items()))
def test_key_changes_with_every_data_config_field(field: str, value: Any) -> None:
    changed = {**DATA_CONFIG, field: value}
    assert key(data_config=changed) != GOLDEN_KEY
    assert parse_benchmark_key(key(data_config=changed)).data_fingerprint != compute_data_fingerprint(DATA_CONFIG)


def test_key_changes_when_a_data_config_field_is_added() -> None:
    assert key(data_config={**DATA_CONFIG, "lowercase": True}) != GOLDEN_KEY


BENCHMARK_CHANGES = {
    "backends": ["onnxruntime"],
    "device": "auto",
    "batch_sizes": [1, 8],
    "max_length": 10,
    "warmup": 2,
    "iterations": 4,
    "min_duration_s": 0.5,
    "intra_op_threads": 2,
}


def test_every_benchmark_config_field_is_covered() -> None:
    assert set(BENCHMARK_CHANGES) == set(BENCHMARK_CONFIG)


@pytest.mark.parametrize(("field", "value"), sorted(BENCHMARK_CHANGES.items()))
def test_key_changes_with_every_benchmark_config_field(field: str, value: Any) -> None:
    assert key(benchmark_config={**BENCHMARK_CONFIG, field: value}) != GOLDEN_KEY


def test_batch_size_order_is_part_of_the_identity() -> None:
    # Lists are hashed as written: [4, 1] is another config than [1, 4] (the order they are measured in).
    assert key(benchmark_config={**BENCHMARK_CONFIG, "batch_sizes": [4, 1]}) != GOLDEN_KEY


@pytest.mark.parametrize("local_path", ["/data/ner", "relative/ner", "/other/machine/ner"])
def test_local_path_does_not_change_the_key(local_path: str) -> None:
    assert key(data_config={**DATA_CONFIG, "local_path": local_path}) == GOLDEN_KEY


def test_local_path_absent_or_none_gives_the_same_key() -> None:
    without = {k: v for k, v in DATA_CONFIG.items() if k != "local_path"}
    assert key(data_config=without) == GOLDEN_KEY


def test_dict_insertion_order_does_not_change_the_key() -> None:
    data_reversed = dict(reversed(list(DATA_CONFIG.items())))
    bench_reversed = dict(reversed(list(BENCHMARK_CONFIG.items())))
    assert list(data_reversed) != list(DATA_CONFIG)
    assert key(data_config=data_reversed, benchmark_config=bench_reversed) == GOLDEN_KEY


def test_building_a_key_does_not_mutate_the_configs() -> None:
    data, bench = copy.deepcopy(DATA_CONFIG), copy.deepcopy(BENCHMARK_CONFIG)
    key(data_config=data, benchmark_config=bench)
    assert data == DATA_CONFIG and bench == BENCHMARK_CONFIG


# ------------------------------------------------------------------------------------------------ safety

UNSAFE_VALUES = [
    pytest.param("a:b", id="colon"),
    pytest.param("it's", id="single-quote"),
    pytest.param('say"hi', id="double-quote"),
    pytest.param("a/b", id="slash"),
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("a|b", id="pipe"),
    pytest.param("a\nb", id="newline"),
    pytest.param("abc\n", id="trailing-newline"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\x1fb", id="control"),
    pytest.param("a b", id="space"),
    pytest.param("", id="empty"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a%b", id="percent"),
    pytest.param("é", id="non-ascii"),
    pytest.param("x" * (MAX_COMPONENT_LENGTH + 1), id="too-long"),
]


@pytest.mark.parametrize("component", ["backbone", "variant", "run_id", "trial_id"])
@pytest.mark.parametrize("value", UNSAFE_VALUES)
def test_unsafe_component_is_rejected_naming_it(component: str, value: str) -> None:
    if value == "" and component in ("variant", "run_id"):
        pytest.skip("an empty variant/run_id means the default ('default'/'unknown')")
    with pytest.raises(ValueError, match=component):
        key(**{component: value})


@pytest.mark.parametrize("value", [None, 12, b"bytes"])
def test_non_string_components_are_rejected(value: Any) -> None:
    with pytest.raises(ValueError, match="backbone"):
        key(backbone=value)
    with pytest.raises(ValueError, match="trial_id"):
        key(trial_id=value)


def test_longest_allowed_component_is_accepted() -> None:
    longest = "x" * MAX_COMPONENT_LENGTH
    assert parse_benchmark_key(key(backbone=longest)).backbone == longest


@pytest.mark.parametrize("version", ["1:2", "a/b", "..", "v 1", "v1\n"])
def test_unsafe_data_version_is_rejected(version: str) -> None:
    with pytest.raises(ValueError, match=r"data_config\.version"):
        key(data_config={**DATA_CONFIG, "version": version})


def test_missing_data_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="version"):
        key(data_config={k: v for k, v in DATA_CONFIG.items() if k != "version"})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Path("/tmp/x")])
def test_unhashable_benchmark_config_values_are_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match="min_duration_s"):
        key(benchmark_config={**BENCHMARK_CONFIG, "min_duration_s": bad})


# ----------------------------------------------------------------------------------------------- parsing


def test_parse_round_trips_the_golden_key() -> None:
    parts = parse_benchmark_key(GOLDEN_KEY)
    assert (
        ":".join(
            [
                parts.backbone,
                parts.variant,
                parts.run_id,
                parts.trial_id,
                parts.data_fingerprint,
                parts.benchmark_config_hash,
            ]
        )
        == GOLDEN_KEY
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a:b:c:d:e", "6"),
        ("a:b:c:d:e:f:g", "6"),
        ("a:b:c:d:e:", "benchmark_config_hash"),
        (":b:c:d:e:f", "backbone"),
        ("a:b:c/d:d:e:f", "run_id"),
        ("a:b:c:..:e:f", "trial_id"),
        ("a:b:c:d:e'x:f", "data_fingerprint"),
        ("a:b:c:d:e:f\n", "benchmark_config_hash"),
    ],
)
def test_parse_rejects_malformed_keys_naming_the_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_benchmark_key(text)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="string"):
        parse_benchmark_key(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- property-based tests

SAFE_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
safe_components = st.text(alphabet=SAFE_ALPHABET, min_size=1, max_size=MAX_COMPONENT_LENGTH).filter(
    lambda s: s not in (".", "..")
)
identity_tuples = st.tuples(safe_components, safe_components, safe_components, safe_components)
versions = st.text(alphabet=SAFE_ALPHABET, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(parts=identity_tuples, version=versions)
def test_build_is_deterministic_and_parse_gives_back_the_parts(parts: tuple[str, str, str, str], version: str) -> None:
    backbone, variant, run_id, trial_id = parts
    data = {**DATA_CONFIG, "version": version}
    built = build_benchmark_key(backbone, variant, run_id, trial_id, data, BENCHMARK_CONFIG)
    assert built == build_benchmark_key(backbone, variant, run_id, trial_id, dict(data), dict(BENCHMARK_CONFIG))
    parsed = parse_benchmark_key(built)
    assert (parsed.backbone, parsed.variant, parsed.run_id, parsed.trial_id) == parts
    assert parsed.data_fingerprint == compute_data_fingerprint(data)
    assert parsed.data_fingerprint.startswith(f"{version}-")
    assert parsed.benchmark_config_hash == compute_config_hash(BENCHMARK_CONFIG)


@PROPERTY_SETTINGS
@given(first=identity_tuples, second=identity_tuples, iterations=st.integers(1, 3), other_iterations=st.integers(1, 3))
def test_distinct_component_tuples_give_distinct_keys(
    first: tuple[str, ...], second: tuple[str, ...], iterations: int, other_iterations: int
) -> None:
    key_a = build_benchmark_key(*first, DATA_CONFIG, {**BENCHMARK_CONFIG, "iterations": iterations})
    key_b = build_benchmark_key(*second, DATA_CONFIG, {**BENCHMARK_CONFIG, "iterations": other_iterations})
    assert (key_a == key_b) == (first == second and iterations == other_iterations)


@PROPERTY_SETTINGS
@given(parts=identity_tuples)
def test_component_boundaries_cannot_shift(parts: tuple[str, str, str, str]) -> None:
    # Moving text from one component to the next (the classic concatenation collision) changes the key.
    backbone, variant, run_id, trial_id = parts
    shifted = (backbone + variant[:1], variant[1:] or "x", run_id, trial_id)
    if len(shifted[0]) > MAX_COMPONENT_LENGTH or shifted == parts:
        return
    assert build_benchmark_key(*shifted, DATA_CONFIG, BENCHMARK_CONFIG) != build_benchmark_key(
        *parts, DATA_CONFIG, BENCHMARK_CONFIG
    )


@PROPERTY_SETTINGS
@given(parts=identity_tuples)
def test_cache_path_stays_directly_inside_the_folder(tmp_path: Path, parts: tuple[str, str, str, str]) -> None:
    built = build_benchmark_key(*parts, DATA_CONFIG, BENCHMARK_CONFIG)
    path = cache_path(tmp_path, built)
    assert path.parent == tmp_path
    assert path.resolve().parent == tmp_path.resolve()
    assert path.name.startswith("benchmark_") and path.name.endswith(".json")
    assert len(path.name.encode()) <= 255
    assert path == cache_path(tmp_path, built)


@PROPERTY_SETTINGS
@given(first=identity_tuples, second=identity_tuples)
def test_cache_path_is_injective(tmp_path: Path, first: tuple[str, ...], second: tuple[str, ...]) -> None:
    key_a = build_benchmark_key(*first, DATA_CONFIG, BENCHMARK_CONFIG)
    key_b = build_benchmark_key(*second, DATA_CONFIG, BENCHMARK_CONFIG)
    assert (cache_path(tmp_path, key_a) == cache_path(tmp_path, key_b)) == (key_a == key_b)


UNSAFE_CHARACTERS = ":/\\'\"| \n\r\t\x00\x7f%*?<>é"
unsafe_components = st.one_of(
    st.just(""),
    st.just("."),
    st.just(".."),
    st.text(alphabet=SAFE_ALPHABET, min_size=MAX_COMPONENT_LENGTH + 1, max_size=MAX_COMPONENT_LENGTH + 20),
    st.builds(
        lambda head, bad, tail: head + bad + tail,
        st.text(alphabet=SAFE_ALPHABET, max_size=8),
        st.text(alphabet=UNSAFE_CHARACTERS, min_size=1, max_size=3),
        st.text(alphabet=SAFE_ALPHABET, max_size=8),
    ),
)


@PROPERTY_SETTINGS
@given(parts=st.lists(safe_components, min_size=6, max_size=6), position=st.integers(0, 5), bad=unsafe_components)
def test_keys_with_an_unsafe_component_are_rejected(tmp_path: Path, parts: list[str], position: int, bad: str) -> None:
    parts[position] = bad
    text = ":".join(parts)
    with pytest.raises(ValueError):
        parse_benchmark_key(text)
    with pytest.raises(ValueError):
        cache_path(tmp_path, text)
    with pytest.raises(ValueError):
        read_cache_entry(tmp_path, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=80), st.lists(st.text(max_size=12), min_size=6, max_size=6).map(":".join)))
def test_cache_path_never_leaves_the_folder_for_any_text(tmp_path: Path, text: str) -> None:
    try:
        path = cache_path(tmp_path, text)
    except ValueError:
        return
    assert path.parent == tmp_path
    assert "/" not in path.name and "\n" not in path.name and path.name not in (".", "..")


# ------------------------------------------------------------------------------------- cache file names


def test_cache_file_name_spells_the_separator_as_plus(tmp_path: Path) -> None:
    assert cache_path(tmp_path, GOLDEN_KEY).name == "benchmark_" + GOLDEN_KEY.replace(":", "+") + ".json"


def test_longest_valid_key_can_be_cached_and_read_back(tmp_path: Path) -> None:
    # Six components of up to 96 characters exceed a 255-byte file name; such keys must still be cacheable.
    longest = "x" * MAX_COMPONENT_LENGTH
    long_key = build_benchmark_key(
        longest, longest, longest, longest, {**DATA_CONFIG, "version": "v" * 79}, BENCHMARK_CONFIG
    )
    other = build_benchmark_key(
        longest, longest, longest, "y" * MAX_COMPONENT_LENGTH, {**DATA_CONFIG, "version": "v" * 79}, BENCHMARK_CONFIG
    )
    written = write_cache_entry(tmp_path, long_key, complete_result(long_key), "run1", mlflow_logged=True)
    assert written == cache_path(tmp_path, long_key)
    assert written.parent == tmp_path and len(written.name) <= 255
    assert cache_path(tmp_path, other) != written
    entry = read_cache_entry(tmp_path, long_key)
    assert entry is not None and entry["benchmark_key"] == long_key and entry["result"] == complete_result(long_key)
    assert read_cache_entry(tmp_path, other) is None


def test_cache_entry_round_trip_and_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    written = write_cache_entry(
        tmp_path, GOLDEN_KEY, {"p50_ms": 1.5, "nested": {"a": [1, 2]}}, None, mlflow_logged=False
    )
    payload = json.loads(written.read_text(encoding="utf-8"))
    assert payload["benchmark_key"] == GOLDEN_KEY
    assert payload["mlflow"] == {"run_id": None, "logged": False}
    assert payload["result"] == {"p50_ms": 1.5, "nested": {"a": [1, 2]}}
    assert sorted(p.name for p in tmp_path.iterdir()) == [written.name]


def test_cache_refuses_non_finite_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_cache_entry(tmp_path, GOLDEN_KEY, {"p50_ms": float("nan")}, None, mlflow_logged=False)
    assert list(tmp_path.iterdir()) == []


def test_defaults_left_out_or_spelled_out_give_the_same_key() -> None:
    spelled_out = {**BENCHMARK_CONFIG, "device": "cpu", "min_duration_s": 0.0, "intra_op_threads": 1}
    left_out = {k: v for k, v in BENCHMARK_CONFIG.items() if k not in ("device", "min_duration_s", "intra_op_threads")}
    integer_duration = {**spelled_out, "min_duration_s": 0}
    keys = {
        build_benchmark_key("bilstm", "v1", None, "abc123", DATA_CONFIG, c)
        for c in (spelled_out, left_out, integer_duration)
    }
    assert len(keys) == 1
    assert (
        build_benchmark_key("bilstm", "v1", None, "abc123", DATA_CONFIG, {**spelled_out, "device": "auto"}) not in keys
    )
