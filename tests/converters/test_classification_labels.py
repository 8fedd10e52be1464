"""``tunegate convert --class-names``: the names become the label file of the output that
scores them (Triton's ``label_filename``), which the gateway's classification reads."""

from __future__ import annotations

import pytest

from converters.errors import SourceError
from converters.labels import attach_labels, parse_class_names
from model_repo import TensorSpec, make_config
from model_repo.config import LABELS_FILE, label_files, read_labels


def config(*outputs: tuple[str, tuple[int, ...]]):
    return make_config("m", [TensorSpec("x", "FP32", (4,))], [TensorSpec(n, "FP32", d) for n, d in outputs],
                       max_batch_size=8)


def test_names_from_a_list_or_a_file(tmp_path):
    assert parse_class_names("cat, dog,bird") == ["cat", "dog", "bird"]
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog, brown\n\n")
    assert parse_class_names(str(names)) == ["cat", "dog, brown"]
    with pytest.raises(SourceError, match="no names"):
        parse_class_names(",")


def test_the_output_with_one_score_per_class_gets_the_label_file(tmp_path):
    cfg = config(("embedding", (16,)), ("probs", (3,)))
    assert attach_labels(cfg, tmp_path, ["cat", "dog", "bird"]) == "probs"
    assert label_files(cfg) == {"probs": LABELS_FILE}
    assert read_labels(tmp_path, LABELS_FILE) == ["cat", "dog", "bird"]


def test_no_or_several_matching_outputs_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="exactly one output with 2 scores"):
        attach_labels(config(("probs", (3,))), tmp_path, ["a", "b"])
    with pytest.raises(SourceError, match="exactly one output"):
        attach_labels(config(("a", (2,)), ("b", (2,))), tmp_path, ["x", "y"])
    assert not (tmp_path / LABELS_FILE).exists()


def test_the_cli_accepts_the_flag():
    import argparse

    from converters.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["model.keras", "--repo", "r", "--name", "m", "--class-names", "a,b"])
    assert args.class_names == "a,b"
