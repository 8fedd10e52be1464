"""Bad input: a clear error naming what was wrong, and no version left behind."""

from __future__ import annotations

import numpy as np
import pytest

from converters import (
    CustomObjectError,
    Options,
    ParityError,
    SourceError,
    UnsupportedOpError,
    publish_file,
    publish_keras_model,
)
from converters.sources.keras import load_custom_objects
from model_repo import InvalidName, Repository


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository(tmp_path / "repo")


def _no_versions(repo: Repository, name: str) -> None:
    model_dir = repo.root / name
    assert not model_dir.exists() or not [p for p in model_dir.iterdir() if not p.name.startswith(".")]


def test_corrupt_h5(corpus, repo):
    with pytest.raises(SourceError, match="corrupt.h5: not a loadable Keras model"):
        publish_file(corpus["corrupt_h5"], repo, "m")
    _no_versions(repo, "m")


def test_unknown_format_says_what_is_expected(corpus, repo):
    with pytest.raises(SourceError, match=r"unknown model format; expected a \.keras or \.h5"):
        publish_file(corpus["not_a_model"], repo, "m")


def test_missing_file(tmp_path, repo):
    with pytest.raises(SourceError, match="no such file"):
        publish_file(tmp_path / "nope.keras", repo, "m")


def test_keras_file_that_is_not_a_zip(tmp_path, repo):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="corrupt .keras file"):
        publish_file(bad, repo, "m")


def test_custom_layer_is_named_and_can_be_supplied(corpus, repo, monkeypatch):
    with pytest.raises(CustomObjectError, match="'Scale'.*--custom-objects MODULE:Scale") as info:
        publish_file(corpus["custom"], repo, "custom")
    assert info.value.name == "Scale"
    _no_versions(repo, "custom")

    monkeypatch.syspath_prepend(str(corpus["custom_dir"]))
    objects = load_custom_objects(["tunegate_test_layers:Scale"])
    manifest = publish_file(corpus["custom"], repo, "custom", custom_objects=objects)
    assert manifest.version == 1 and manifest.parity["passed"]


def test_custom_objects_spec_is_checked():
    with pytest.raises(SourceError, match="expected MODULE:ATTR"):
        load_custom_objects(["no_colon"])
    with pytest.raises(SourceError, match="cannot import it"):
        load_custom_objects(["no_such_module_xyz:Thing"])


def test_unsupported_op_is_named(corpus, repo):
    with pytest.raises(UnsupportedOpError, match="Lgamma") as info:
        publish_file(corpus["saved_model"], repo, "exotic", signature="exotic")
    assert info.value.ops == ["Lgamma"]
    _no_versions(repo, "exotic")


def test_signature_choice(corpus, repo):
    manifest = publish_file(corpus["saved_model"], repo, "scores", signature="scores")
    assert set(manifest.parity["outputs"]) == {"logits", "probs"}
    assert manifest.source["signature"] == "scores"
    with pytest.raises(SourceError, match=r"no signature 'nope'.*exotic.*scores.*serving_default"):
        publish_file(corpus["saved_model"], repo, "scores", signature="nope")


def test_graphdef_ambiguous_outputs_list_candidates(corpus, repo):
    with pytest.raises(SourceError, match="--outputs.*Identity, Identity_1"):
        publish_file(corpus["graphdef_two_outputs"], repo, "two")
    manifest = publish_file(corpus["graphdef_two_outputs"], repo, "two", outputs=["Identity", "Identity_1"])
    assert set(manifest.parity["outputs"]) == {"Identity", "Identity_1"}


def test_parity_failure_publishes_nothing(repo):
    from converters import examples

    model = examples.two_in_two_out()
    # GELU becomes 1 - Erf in ONNX: the answers differ in the last bits, so zero tolerance fails.
    with pytest.raises(ParityError, match=r"does not match the original model within atol=0, rtol=0") as info:
        publish_keras_model(model, repo, "strict", atol=0.0, rtol=0.0)
    assert info.value.report["max_abs"] > 0
    _no_versions(repo, "strict")
    manifest = publish_keras_model(model, repo, "strict", manifest_fields={"metrics": {"acc": 0.5}},
                                   parent_version=None)
    assert manifest.version == 1 and manifest.metrics == {"acc": 0.5}


def test_sample_inputs_are_used_and_checked(repo):
    from converters import examples

    model = examples.basic_mlp()
    sample = {"features": np.random.default_rng(3).random((5, 100), dtype=np.float32)}
    manifest = publish_keras_model(model, repo, "mlp", sample=sample)
    assert manifest.parity["batches"] == [1, 5] and manifest.parity["inputs"] == "sample"
    with pytest.raises(SourceError, match=r"has shape \(5, 99\), expected \(None, 100\)"):
        publish_keras_model(model, repo, "mlp", sample={"features": np.zeros((5, 99), np.float32)})
    with pytest.raises(SourceError, match=r"no array for inputs \['numbers', 'extra'\]"):
        publish_keras_model(examples.two_in_two_out(), repo, "two", sample={"a": np.zeros((2, 3)), "b": np.zeros(2)})


def test_bad_options_and_names(corpus, repo):
    with pytest.raises(SourceError, match="opset 30 is not supported; expected 13..18"):
        publish_file(corpus["mlp_h5"], repo, "m", options=Options(opset=30))
    with pytest.raises(InvalidName):
        publish_file(corpus["mlp_h5"], repo, "../escape")


def test_lambda_layer_needs_unsafe(tmp_path, repo):
    import keras

    inputs = keras.Input(shape=(3,), name="x")
    outputs = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(SourceError, match="safe mode refuses; pass --unsafe only if you trust the file"):
        publish_file(path, repo, "lam")
    _no_versions(repo, "lam")
    manifest = publish_file(path, repo, "lam", safe_mode=False)
    assert manifest.parity["max_abs"] == 0.0
