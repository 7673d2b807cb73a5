"""Canonical JSON, the identity hashes and safe identity components (benchmark_pipeline.hashing)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from benchmark_pipeline import contract
from benchmark_pipeline.hashing import (
    MAX_COMPONENT_LENGTH,
    MAX_DATA_VERSION_LENGTH,
    canonical_json,
    config_hash,
    data_fingerprint,
    is_safe_component,
    require_safe_component,
    sha256_hex,
    study_key_hash,
    trial_key_hash,
)

DATA_CONFIG = {
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
VARIANT_CONFIG = {
    "n_trials": 3,
    "epochs": 1,
    "search_space": {
        "learning_rate": {"type": "float", "low": 0.003, "high": 0.03, "log": True},
        "width": {"type": "categorical", "choices": [16, 32]},
    },
}
OBJECTIVE = {"metric": "macro-f1", "direction": "maximize"}
HYPERPARAMETERS = {"learning_rate": 0.01, "width": 16, "dropout": 0.1}

# Goldens: computed once from the inputs above. A change here changes every stored identity (studies, trials,
# benchmark keys) and must be a deliberate schema change, never a side effect.
GOLDEN_DATA_FINGERPRINT = "1-e13200f7446e55fd"
GOLDEN_STUDY_KEY = "eb42594034323bdeb9b8da256bae86ed58bf93828369162df05570cedbd1088e"
GOLDEN_TRIAL_KEY = "9ab7d2da135b74ad83d2c5206d39f6b82d6e05daddf79fc00debdcdb5392d10f"
GOLDEN_CONFIG_HASH = "a1fbfff801eadd5b"


def test_golden_hashes() -> None:
    fingerprint = data_fingerprint(DATA_CONFIG)
    assert fingerprint == GOLDEN_DATA_FINGERPRINT
    study_key = study_key_hash("bilstm", "v1", fingerprint, VARIANT_CONFIG, OBJECTIVE)
    assert study_key == GOLDEN_STUDY_KEY
    assert trial_key_hash(study_key, HYPERPARAMETERS) == GOLDEN_TRIAL_KEY
    assert config_hash({"b": 1, "a": [1.5, "x", None, True]}) == GOLDEN_CONFIG_HASH


def test_study_key_is_sha256_of_documented_canonical_json() -> None:
    expected_text = (
        '{"backbone":"bilstm","data_fingerprint":"1-e13200f7446e55fd",'
        '"hpo":{"epochs":1,"search_space":{"learning_rate":{"high":0.03,"log":true,"low":0.003,"type":"float"},'
        '"width":{"choices":[16,32],"type":"categorical"}}},'
        '"objective":{"direction":"maximize","metric":"macro-f1"},"schema":"study/v1","variant":"v1"}'
    )
    assert hashlib.sha256(expected_text.encode("ascii")).hexdigest() == GOLDEN_STUDY_KEY


def test_study_key_ignores_volatile_fields_but_not_search_settings() -> None:
    base = study_key_hash("bilstm", "v1", GOLDEN_DATA_FINGERPRINT, VARIANT_CONFIG, OBJECTIVE)
    more_trials = {**VARIANT_CONFIG, "n_trials": 12, "timeout_s": 60}
    assert study_key_hash("bilstm", "v1", GOLDEN_DATA_FINGERPRINT, more_trials, OBJECTIVE) == base
    assert study_key_hash("bilstm", "v1", GOLDEN_DATA_FINGERPRINT, {**VARIANT_CONFIG, "epochs": 2}, OBJECTIVE) != base
    assert study_key_hash("bilstm", "v2", GOLDEN_DATA_FINGERPRINT, VARIANT_CONFIG, OBJECTIVE) != base
    assert study_key_hash("tiny_transformer", "v1", GOLDEN_DATA_FINGERPRINT, VARIANT_CONFIG, OBJECTIVE) != base
    minimize = {**OBJECTIVE, "direction": "minimize"}
    assert study_key_hash("bilstm", "v1", GOLDEN_DATA_FINGERPRINT, VARIANT_CONFIG, minimize) != base


def test_trial_key_depends_on_every_hyperparameter_not_on_their_order() -> None:
    reordered = dict(reversed(list(HYPERPARAMETERS.items())))
    assert trial_key_hash(GOLDEN_STUDY_KEY, reordered) == GOLDEN_TRIAL_KEY
    assert trial_key_hash(GOLDEN_STUDY_KEY, {**HYPERPARAMETERS, "width": 32}) != GOLDEN_TRIAL_KEY
    assert trial_key_hash(GOLDEN_STUDY_KEY, {**HYPERPARAMETERS, "dropout": 0.10000000000000002}) != GOLDEN_TRIAL_KEY
    assert trial_key_hash("0" * 64, HYPERPARAMETERS) != GOLDEN_TRIAL_KEY


def test_canonical_json_sorts_keys_without_whitespace_ascii_only() -> None:
    text = canonical_json({"b": 1, "a": [1.5, "x", None, True], "c": (1, 2), "u": "é"})
    assert text == '{"a":[1.5,"x",null,true],"b":1,"c":[1,2],"u":"\\u00e9"}'
    assert canonical_json({"z": {"y": 1, "x": 2}}) == canonical_json({"z": {"x": 2, "y": 1}})
    assert sha256_hex({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()


def test_canonical_json_int_and_float_spellings_differ() -> None:
    assert canonical_json(1) == "1"
    assert canonical_json(1.0) == "1.0"
    assert canonical_json(0.1) == "0.1"
    assert sha256_hex({"x": 1}) != sha256_hex({"x": 1.0})
    assert canonical_json(True) == "true" and sha256_hex(True) != sha256_hex(1)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"deep": [1.0, math.nan]}])
def test_canonical_json_rejects_non_finite_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json(value)


@pytest.mark.parametrize("key", [1, 1.5, None, ("a",)])
def test_canonical_json_rejects_non_string_keys(key: object) -> None:
    with pytest.raises(ValueError, match="non-string key"):
        canonical_json({"outer": {key: 1}})


@pytest.mark.parametrize("value", [Path("/tmp/data"), {"path": Path("x")}, {1, 2}, b"ab", bytearray(b"ab"), object()])
def test_canonical_json_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="cannot hash value of type"):
        canonical_json(value)


def test_canonical_json_error_names_the_location() -> None:
    with pytest.raises(ValueError, match=r"\$\.a\.b\[1\]"):
        canonical_json({"a": {"b": [1, math.nan]}})


def test_data_fingerprint_ignores_local_path() -> None:
    without = {k: v for k, v in DATA_CONFIG.items() if k != "local_path"}
    assert data_fingerprint(without) == GOLDEN_DATA_FINGERPRINT
    assert data_fingerprint({**DATA_CONFIG, "local_path": "/mnt/somewhere/else"}) == GOLDEN_DATA_FINGERPRINT


def test_data_fingerprint_changes_with_version_and_seed() -> None:
    other_version = data_fingerprint({**DATA_CONFIG, "version": "2"})
    assert other_version.startswith("2-") and other_version != GOLDEN_DATA_FINGERPRINT
    other_seed = data_fingerprint({**DATA_CONFIG, "seed": 14})
    assert other_seed.startswith("1-") and other_seed != GOLDEN_DATA_FINGERPRINT
    assert data_fingerprint({**DATA_CONFIG, "train_size": 97}) != GOLDEN_DATA_FINGERPRINT


def test_data_fingerprint_requires_a_safe_version() -> None:
    with pytest.raises(ValueError, match=r"data_config\.version is required"):
        data_fingerprint({k: v for k, v in DATA_CONFIG.items() if k != "version"})
    with pytest.raises(ValueError, match=r"data_config\.version"):
        data_fingerprint({**DATA_CONFIG, "version": "1:2"})


@pytest.mark.parametrize("value", ["bilstm", "v2", "tiny_transformer", "a.b-c_D9", "..."])
def test_require_safe_component_accepts_safe_names(value: str) -> None:
    assert require_safe_component(value, "name") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "..",
        "a:b",
        "a'b",
        'a"b',
        "a/b",
        "../x",
        "a b",
        "a\nb",
        "name\n",
        "a\tb",
        "a\x00b",
        "a\x7f",
        "é",
        None,
        3,
    ],
)
def test_require_safe_component_rejects_unsafe_values(value: object) -> None:
    with pytest.raises(ValueError, match=r"my\.field"):
        require_safe_component(value, "my.field")


#: Lookalikes that a ``\\d`` or ``\\w`` pattern would let through: an Arabic-Indic three, a zero-width space,
#: a fullwidth digit, a Cyrillic "а", and a non-breaking space.
LOOKALIKES = ["v\u0663", "bil\u200bstm", "v\uff12", "\u0430bc", "a\u00a0b"]


@pytest.mark.parametrize("value", LOOKALIKES)
def test_unicode_lookalikes_are_not_safe(value: str) -> None:
    assert not is_safe_component(value)
    with pytest.raises(ValueError, match="ASCII"):
        require_safe_component(value, "my.field")


def test_components_are_limited_to_the_key_component_length() -> None:
    assert require_safe_component("x" * MAX_COMPONENT_LENGTH, "name")
    with pytest.raises(
        ValueError, match=rf"my.field is {MAX_COMPONENT_LENGTH + 1} characters long; at most {MAX_COMPONENT_LENGTH}"
    ):
        require_safe_component("x" * (MAX_COMPONENT_LENGTH + 1), "my.field")
    # The data version leaves room for "-{hash16}": its fingerprint is a key component too.
    assert len(data_fingerprint({**DATA_CONFIG, "version": "v" * MAX_DATA_VERSION_LENGTH})) == MAX_COMPONENT_LENGTH
    with pytest.raises(ValueError, match=r"data_config\.version is 80 characters long"):
        data_fingerprint({**DATA_CONFIG, "version": "v" * (MAX_DATA_VERSION_LENGTH + 1)})


@pytest.mark.parametrize(
    ("name", "variant"),
    [("bilstm_v2", "v2"), ("bilstm_v10", "v10"), ("bilstm_v\u0663", None), ("bilstm_v2\n", None), ("bilstm", None)],
)
def test_study_name_variant_pattern_takes_ascii_digits_only(name: str, variant: str | None) -> None:
    assert contract.variant_from_study_name(name) == variant
