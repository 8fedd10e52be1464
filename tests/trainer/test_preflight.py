"""trainer.preflight on real files: what it accepts is what trainer.data reads."""

from __future__ import annotations

import numpy as np
import pytest

from model_repo import Repository, TensorSpec
from model_repo.config import make_config
from trainer.data import load_data
from trainer.errors import DataError
from trainer.preflight import check_data, model_input_shape, npz_arrays


def _accepted(paths, **kwargs) -> None:
    check_data([str(p) for p in paths], model="m", **kwargs)
    load_data([str(p) for p in paths], features=kwargs.get("features"), label=kwargs.get("label"))


def test_named_arrays_are_accepted_like_the_loader_does(tmp_path):
    x, y = np.ones((6, 4), np.float32), np.arange(6)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    np.savez(tmp_path / "label.npz", x=x, label=y, y=np.zeros((6, 9)))  # 'label' wins over 'y'
    np.savez(tmp_path / "own.npz", a=x, b=x[:, :2], target=y)
    _accepted([tmp_path / "xy.npz", tmp_path / "label.npz"], model_input=(4,))
    _accepted([tmp_path / "own.npz"], features=["a", "b"], label="target", model_input=(-1,))
    (tmp_path / "t.csv").write_text("p,q,label\n1,2,0\n3,4,1\n")
    _accepted([tmp_path / "t.csv"], model_input=(2,))


def test_headers_only(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x=np.zeros((3, 8, 8), np.float16), y=np.arange(3, dtype=np.uint8))
    assert npz_arrays(tmp_path / "c.npz") == {"x": ((3, 8, 8), np.dtype(np.float16)),
                                              "y": ((3,), np.dtype(np.uint8))}


@pytest.mark.parametrize("arrays, kwargs, message", [
    ({"x": np.zeros((4, 2)), "y": np.zeros(5)}, {}, "arrays differ in their number of rows: 'x' 4, 'y' 5"),
    ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, {}, "array 'x' holds <U1, not numbers"),
    ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, {}, "no examples"),
    ({"x": np.zeros((4, 3)), "y": np.zeros(4)}, {"model_input": (2,)},
     "features of shape (3,) per example do not fit the input of model 'm', (2,)"),
    ({"pixels": np.zeros((4, 3)), "digit": np.zeros(4)}, {"features": ["pixels"]},
     "no array named 'y'; it has 'pixels' (4, 3) float64, 'digit' (4,) float64. Expected features 'pixels' "
     "and labels 'y'; use --features pixels --label digit"),
])
def test_refused_with_a_reason(tmp_path, arrays, kwargs, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as info:
        check_data([str(tmp_path / "d.npz")], model="m", **kwargs)
    assert message in str(info.value)


def test_unknown_format_and_feedback_stores(tmp_path):
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported data format '.json'"):
        check_data([str(tmp_path / "d.json")], model="m")
    check_data(["feedback:", str(tmp_path)], model="m")  # stores are left to their reader


def test_model_input_from_the_config(tmp_path):
    repo = Repository(tmp_path)
    for name, batch, dims in (("batched", 8, (64,)), ("unbatched", 0, (-1, 28, 28))):
        (tmp_path / name).mkdir()
        repo.write_config(name, make_config(name, [TensorSpec("x", "FP32", dims)],
                                            [TensorSpec("y", "FP32", (10,))], max_batch_size=batch))
    assert model_input_shape(repo, "batched") == (64,)
    assert model_input_shape(repo, "unbatched") == (28, 28)
    assert model_input_shape(repo, "missing") is None
