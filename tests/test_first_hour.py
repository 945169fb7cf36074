"""Issue 31, "the first hour": what a new operator ran into, each with the real `polchain` CLI in a
subprocess. Bad input is one line on stderr and exit status 2, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_operator_cli import one_line_error, polchain


# -- 31.4: a --key that does not exist is an error, not a new key -----------------------------------
@pytest.mark.parametrize("command", [
    ("mine", "--preset", "tiny", "--blocks", "1", "--datadir", "{d}"),
    ("node", "--preset", "tiny", "--datadir", "{d}"),
    ("pol", "register", "{d}/no-proof"),
])
def test_a_missing_key_file_is_an_error_not_a_new_key(tmp_path, command):
    typo = tmp_path / "typo.key"
    args = [a.format(d=tmp_path / "d") for a in command]
    line = one_line_error(polchain(*args, "--key", str(typo), timeout=30))   # a node that starts would run on
    assert f"--key {typo}: no such key file" in line and "--create-key" in line, line
    assert not typo.exists() and not (tmp_path / "d").exists()


def test_a_missing_key_file_from_the_environment_is_named(tmp_path):
    line = one_line_error(polchain("node", "--datadir", str(tmp_path / "d"),
                                   env={"POLCHAIN_KEY": str(tmp_path / "k.key")}, timeout=30))
    assert line.startswith(f"error: POLCHAIN_KEY {tmp_path / 'k.key'}: no such key file"), line
    assert not (tmp_path / "k.key").exists()


def test_an_unreadable_key_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    for args in (("mine", "--preset", "tiny", "--datadir", str(tmp_path / "d")),
                 ("pol", "register", str(tmp_path / "no-proof"))):
        line = one_line_error(polchain(*args, "--key", str(bad)))
        assert "is not an unencrypted PEM private key" in line, line


# -- 31.5: the datadir remembers its dataset directory ------------------------------------------------
def test_the_datadir_remembers_its_dataset_dir(tmp_path):
    d, data = tmp_path / "d", tmp_path / "elsewhere"
    key = tmp_path / "new.key"
    r = polchain("mine", "--preset", "tiny", "--blocks", "1", "--datadir", str(d), "--dataset-dir", str(data),
                 "--key", str(key), "--create-key")
    assert r.returncode == 0, r.stderr
    assert key.exists()                                         # --create-key made it (31.4)
    assert f"dataset directory {data} remembered in {d / 'polchain.toml'}" in r.stderr
    # every later command on the datadir finds it without --dataset-dir
    shown = polchain("node", "--datadir", str(d), "--show-config")
    assert f'dataset_dir = "{data}"  # from {d / "polchain.toml"}' in shown.stdout, shown.stdout
    r = polchain("verify", "--datadir", str(d))
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    assert f"dataset directory {data} (from {d / 'polchain.toml'})" in r.stderr
    # an explicit flag still wins, and the remembered value is left as it was
    other = tmp_path / "other"
    shown = polchain("node", "--datadir", str(d), "--dataset-dir", str(other), "--show-config")
    assert f'dataset_dir = "{other}"  # from --dataset-dir' in shown.stdout, shown.stdout
    r = polchain("verify", "--datadir", str(d), "--dataset-dir", str(other))
    assert r.returncode == 0 and "dataset directory" not in r.stderr, r.stderr
    assert (d / "polchain.toml").read_text().count("dataset_dir") == 1
    assert f'dataset_dir = "{data}"' in (d / "polchain.toml").read_text()


def test_the_default_dataset_dir_is_not_written(tmp_path):
    d = tmp_path / "d"
    r = polchain("mine", "--preset", "tiny", "--blocks", "1", "--datadir", str(d), "--dataset-dir", str(d / "data"))
    assert r.returncode == 0, r.stderr
    assert not (d / "polchain.toml").exists()


def test_remembering_keeps_what_the_config_file_holds(tmp_path):
    from node.settings import remember_dataset_dir, stored_dataset_dir
    d = tmp_path / "d"
    d.mkdir()
    (d / "polchain.toml").write_text("# mine\nport = 8001")          # no newline at the end
    assert remember_dataset_dir(d, tmp_path / "x")
    assert not remember_dataset_dir(d, tmp_path / "y")                # one already there: left alone
    text = (d / "polchain.toml").read_text()
    assert text.startswith("# mine\nport = 8001\n") and stored_dataset_dir(d) == (tmp_path / "x").resolve()
