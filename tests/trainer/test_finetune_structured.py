"""Fine-tuning a model with several inputs (issue 25): the structured-data model (numeric columns
through Normalization, a string column through StringLookup + CategoryEncoding, an integer column
through IntegerLookup) takes labelled rows through a real gateway's feedback route, and a real
``tunegate finetune --data feedback: --np 1`` reads every input from that store by name, publishes
a version that passes parity, and serves it. The character-split and multi-hot text variants
(one text input) go the same way from a store the FeedbackWriter fills."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from model_repo import Repository
from model_repo.feedback import FeedbackWriter, feedback_dir, read_feedback
from tests.converters import preprocessing_models as pm
from tests.gateway.conftest import make_settings, serve
from trainer.data import load_data
from trainer.errors import DataError

from .conftest import ROOT, env, finetune
from .test_finetune_strings import labelled_texts

DTYPES = {"numbers": "FP32", "color": "BYTES", "size": "INT64", "text": "BYTES"}
OUTPUTS = {"structured": "class_probs", "characters": "probs", "bag_of_words": "probs"}
BUILDERS = {"structured": "pm.structured()", "characters": "pm.sentiment(split='character', length=24)",
            "bag_of_words": "pm.bag_of_words()"}
QUICK = ["--data", "feedback:", "--np", "1", "--epochs", "1", "--batch-size", "8",
         "--gate", "loss:-1000"]  # the gate passes whatever the loss did: publishing is under test


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """A repository per model serving it as version 1, all built in one child process (one
    TensorFlow start; this process stays free of TensorFlow)."""
    base = tmp_path_factory.mktemp("structured_templates")
    script = "from converters import publish_keras_model\nfrom model_repo import Repository\n" \
             "from tests.converters import preprocessing_models as pm\n"
    for name, build in BUILDERS.items():
        script += f"publish_keras_model({build}, Repository({str(base / name)!r}), {name!r})\n"
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, env=env(), timeout=300)
    return {name: base / name for name in BUILDERS}


def _repo(templates: dict[str, Path], name: str, tmp_path: Path) -> Repository:
    shutil.copytree(templates[name], tmp_path / "repo")
    return Repository(tmp_path / "repo")


def structured_rows(rows: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows of the three columns, known and unknown values alike, labelled by a rule the model
    can learn (the colour's class, shifted by the size)."""
    rng = np.random.default_rng(seed)
    colors = rng.choice(pm.COLORS + ["purple", "RED", "grün"], rows)
    sizes = rng.choice(pm.SIZES + [5, 99], rows)
    labels = (np.array([len(c) for c in colors]) + (sizes > 10)) % 3
    return {"numbers": rng.normal(5, 2, (rows, 3)).astype(np.float32),
            "color": np.array([[c] for c in colors], dtype=object),
            "size": sizes.reshape(rows, 1).astype(np.int64)}, labels.astype(np.int64)


def _send_feedback(server, feeds: dict[str, np.ndarray], labels: np.ndarray) -> None:
    """Over the gateway's feedback route (HTTP JSON), in batches of 8: the store keeps each
    input under the name the gateway gives it."""
    for start in range(0, len(labels), 8):
        rows = slice(start, start + 8)
        inputs = [{"name": k, "datatype": DTYPES[k], "shape": list(v[rows].shape), "data": v[rows].ravel().tolist()}
                  for k, v in feeds.items()]
        truth = labels[rows].tolist()
        inputs.append({"name": "label", "datatype": "INT64", "shape": [len(truth)], "data": truth})
        status, body = server.json("POST", "/v2/models/structured/feedback", {"inputs": inputs})
        assert status == 200, body


def _answers(root: Path, model: str, version: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with serve(make_settings(root)) as server, contextlib.closing(server.client()) as client:
        inputs = []
        for name, array in feeds.items():
            tensor = httpclient.InferInput(name, list(array.shape), DTYPES[name])
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        return client.infer(model, inputs, model_version=version).as_numpy(OUTPUTS[model])


def _check_published(repo: Repository, model: str, outcome: dict, output: str, feeds: dict[str, np.ndarray]):
    assert outcome is not None and outcome["status"] == "published" and outcome["version"] == 2, output
    manifest = repo.read_manifest(model, 2)
    assert manifest.parent_version == 1 and manifest.parity["passed"], manifest.parity
    before, after = _answers(repo.root, model, "1", feeds), _answers(repo.root, model, "2", feeds)
    assert after.shape == before.shape and np.allclose(after.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(before, after), "training on the feedback changed nothing"
    return manifest


def test_finetune_reads_every_input_of_the_structured_model_by_name(templates, tmp_path, needs_horovod):
    repo = _repo(templates, "structured", tmp_path)
    feeds, labels = structured_rows(64)
    with serve(make_settings(repo.root)) as server:
        _send_feedback(server, feeds, labels)
    stored = read_feedback(feedback_dir(repo.root, "structured"))
    assert sorted(stored.inputs) == ["color", "numbers", "size"] and stored.records == 8
    code, outcome, output = finetune(repo.root, "--model", "structured", *QUICK)
    assert code == 0, output
    manifest = _check_published(repo, "structured", outcome, output, structured_rows(6, seed=9)[0])
    assert manifest.extra["data_snapshot"]["feedback"]["rows"] == 64
    # The drift reference is the numeric columns', named (text and lookup ids have none).
    assert manifest.extra["input_summary"]["input"] == "numbers"


@pytest.mark.parametrize("model", ["characters", "bag_of_words"])
def test_finetune_the_text_variants_on_their_feedback(templates, tmp_path, model, needs_horovod):
    repo = _repo(templates, model, tmp_path)
    texts, labels = labelled_texts(48)
    with FeedbackWriter(feedback_dir(repo.root, model)) as writer:
        writer.append({"text": texts}, labels)
    code, outcome, output = finetune(repo.root, "--model", model, *QUICK)
    assert code == 0, output
    manifest = _check_published(repo, model, outcome, output, {"text": labelled_texts(4, seed=3)[0]})
    assert manifest.parity["inputs"] == "sample and generated text"


def test_a_store_of_several_inputs_loads_as_a_dict_and_files_are_refused_in_one_line(tmp_path):
    feeds, labels = structured_rows(10)
    with FeedbackWriter(feedback_dir(tmp_path, "m")) as writer:
        writer.append(feeds, labels)
    names = ["numbers", "color", "size"]
    data = load_data(["feedback:"], repo_root=tmp_path, model="m", inputs=names)
    assert sorted(data.x) == sorted(names) and len(data) == 10
    assert data.x["size"].dtype == np.int64 and data.x["numbers"].dtype == np.float32  # as the model takes them
    assert all(type(c) is str for c in data.x["color"].ravel())
    assert data.take(np.array([3, 1])).x["color"][:, 0].tolist() == feeds["color"][[3, 1], 0].tolist()
    # The same rows by name in another order: the same lineage.
    reordered = load_data(["feedback:"], repo_root=tmp_path, model="m", inputs=names[::-1])
    assert reordered.digest == data.digest
    np.savez(tmp_path / "d.npz", x=feeds["numbers"], y=labels)
    with pytest.raises(DataError, match=r"d.npz: .npz, CSV and Parquet files feed a model with one input; "
                                        r"this model takes 3 \(numbers, color, size\).*--data feedback:"):
        load_data([str(tmp_path / "d.npz")], inputs=names)
    with pytest.raises(DataError, match=r"no input named \['weight'\]"):
        load_data(["feedback:"], repo_root=tmp_path, model="m", inputs=["numbers", "weight"])
    single = load_data(["feedback:"], repo_root=tmp_path, model="m", features=["numbers"], inputs=["numbers"])
    assert isinstance(single.x, np.ndarray) and single.x.shape == (10, 3)  # one input: one array, as before


def test_files_for_the_structured_model_are_refused_before_any_rank_starts(templates, tmp_path):
    repo = _repo(templates, "structured", tmp_path)
    feeds, labels = structured_rows(8)
    np.savez(tmp_path / "rows.npz", x=feeds["numbers"], y=labels)
    code, _, output = finetune(repo.root, "--model", "structured", "--data", str(tmp_path / "rows.npz"), "--np", "1")
    assert code == 2, output
    line = next(t for t in output.splitlines() if "error:" in t)
    assert "rows.npz: .npz, CSV and Parquet files feed a model with one input; this model takes 3 (" in line
    assert all(name in line for name in ("numbers", "color", "size")) and "--data feedback:" in line
    assert "horovodrun" not in output.lower() and "Traceback" not in output
