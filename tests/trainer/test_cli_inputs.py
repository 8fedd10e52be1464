"""Bad input caught by the launcher before any rank starts: clear messages, nothing published."""

from __future__ import annotations

from .conftest import finetune, versions


def test_missing_data_file(repo, tmp_path):
    rc, _, output = finetune(repo, "--model", "digits", "--data", str(tmp_path / "nope.npz"))
    assert rc == 2
    assert f"tunegate finetune: error: data file not found: {tmp_path / 'nope.npz'}" in output
    assert versions(repo) == [1]


def test_unknown_model(repo, digits_npz):
    rc, _, output = finetune(repo, "--model", "nosuch", "--data", str(digits_npz))
    assert rc == 2
    assert "tunegate finetune: error: unknown model 'nosuch'" in output


def test_unknown_version(repo, digits_npz):
    rc, _, output = finetune(repo, "--model", "digits", "--version", "7", "--data", str(digits_npz))
    assert rc == 2
    assert "version 7 of model 'digits' does not exist" in output


def test_bad_gate_and_hosts(repo, digits_npz):
    rc, _, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--gate", "f1:+0.1")
    assert rc == 2 and "metric must be one of ['accuracy', 'loss']" in output
    rc, _, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--np", "3",
                             "--hosts", "localhost:2")
    assert rc == 2 and "--np 3 does not fit the 2 slots" in output
    assert versions(repo) == [1]


# Data a rank would refuse is refused before horovodrun starts, in one line that says what
# the file holds and which flags name other arrays or columns.
def _one_error_line(result: tuple[int, dict | None, str]) -> str:
    rc, _, output = result
    assert rc == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1, output  # no horovodrun output, no traceback
    assert lines[0].startswith("tunegate finetune: error: ")
    return lines[0]


def test_npz_without_x_and_y_names_what_it_has(repo, digits, tmp_path):
    import numpy as np

    path = tmp_path / "more.npz"
    np.savez(path, data=digits[0], target=digits[1])
    line = _one_error_line(finetune(repo, "--model", "digits", "--data", str(path)))
    assert f"{path}: no array named 'x', 'y'; it has 'data' (1797, 64) float32, 'target' (1797,) int64" in line
    assert "Expected features 'x' and labels 'y'; use --features data --label target" in line
    assert versions(repo) == [1]


def test_features_that_do_not_fit_the_model(repo, tmp_path):
    import numpy as np

    path = tmp_path / "wide.npz"
    np.savez(path, x=np.zeros((8, 100), np.float32), y=np.zeros(8, np.int64))
    line = _one_error_line(finetune(repo, "--model", "digits", "--data", str(path)))
    assert "features of shape (100,) per example do not fit the input of model 'digits', (64,)" in line


def test_csv_without_the_label_column(repo, tmp_path):
    path = tmp_path / "more.csv"
    path.write_text("a,b,digit\n1,2,3\n")
    line = _one_error_line(finetune(repo, "--model", "digits", "--data", str(path)))
    assert f"{path}: no column named 'label'; it has ['a', 'b', 'digit']" in line
    assert "--label COLUMN --features COLUMN,..." in line


def test_held_out_data_is_checked_too(repo, digits_npz, tmp_path):
    path = tmp_path / "held_out.npz"
    path.write_bytes(b"not a zip")
    line = _one_error_line(finetune(repo, "--model", "digits", "--data", str(digits_npz),
                                     "--val-data", str(path)))
    assert f"cannot read {path}: not a NumPy .npz archive" in line


def test_help_shows_defaults():
    import subprocess
    import sys

    from .conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "tunegate_cli.py"), "finetune", "--help"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    flat = " ".join(out.split())
    for expected in ("--epochs EPOCHS default: 5", "--seed SEED default: 0", "--optimizer {adam,sgd} default: adam",
                     "(default: 0.001)", "--mode {allreduce,average}", "(default: allreduce)",
                     "Exit status: 0 a new version was published"):
        assert expected in flat, expected
    assert "(default: None)" not in flat
