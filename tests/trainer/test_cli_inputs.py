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
