"""Node settings: one declaration feeds flags, POLCHAIN_* variables, the TOML config file and the
defaults, with precedence flag > variable > config file > default; bad values are one-line errors."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from node.settings import (CONFIG_FILE, Settings, SettingsError, add_arguments, config_key, env_of, flags_of,
                           load_settings)


def parse(*argv: str) -> dict:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return vars(p.parse_args(list(argv)))


def test_every_setting_has_a_flag_a_variable_and_a_key():
    p = argparse.ArgumentParser()
    add_arguments(p)
    flags = {s for a in p._actions for s in a.option_strings}
    for f in dataclasses.fields(Settings):
        assert set(flags_of(f)) <= flags, f.name
        assert env_of(f) and config_key(f)
        assert f.metadata["help"]
    # the two that used to be missing or dropped (issue 13)
    assert "--max-peers" in flags and "--max-body-bytes" in flags
    s = load_settings(parse(), {"POLCHAIN_MAX_BODY_BYTES": "1234", "POLCHAIN_MAX_PEERS": "7"})
    assert (s.max_body_bytes, s.max_peers) == (1234, 7)


def test_defaults():
    s = load_settings(parse(), {})
    assert s == Settings()
    assert s.port == 8000 and s.mine is False and s.discover is True and s.peers == []


def test_precedence_flag_over_env_over_config_over_default(tmp_path):
    d = tmp_path / "dd"
    d.mkdir()
    (d / CONFIG_FILE).write_text('port = 9001\npoll_interval = 0.5\nmine = true\npeers = ["http://a:1"]\n'
                                 'keep_weights = 7\n')
    env = {"POLCHAIN_DATADIR": str(d), "POLCHAIN_PORT": "9002", "POLCHAIN_POLL_INTERVAL": "0.75"}
    sources: dict = {}
    s = load_settings(parse("--port", "9003"), env, sources=sources)
    assert s.datadir == d
    assert s.port == 9003 and sources["port"] == "--port"                         # flag
    assert s.poll_interval == 0.75 and sources["poll_interval"] == "POLCHAIN_POLL_INTERVAL"   # variable
    assert s.mine is True and s.peers == ["http://a:1"] and s.keep_weights == 7   # config file
    assert sources["mine"] == str(d / CONFIG_FILE)
    assert s.threads is None and sources["threads"] == "default"
    assert load_settings(parse("--no-mine"), env).mine is False                   # a flag turns it back off
    assert load_settings(parse("--peer", "http://b:2", "--peer", "http://c:3"), env).peers == ["http://b:2",
                                                                                             "http://c:3"]


def test_config_option_names_another_file(tmp_path):
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text("max_peers = 3\n")
    assert load_settings(parse(), {"POLCHAIN_CONFIG": str(cfg)}).max_peers == 3
    assert load_settings(parse(), {}, config=cfg).max_peers == 3
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(parse(), {}, config=tmp_path / "missing.toml")


@pytest.mark.parametrize("flags,env,config,message", [
    ((), {"POLCHAIN_MINE": "maybe"}, None, "POLCHAIN_MINE='maybe': expected true or false"),
    ((), {"POLCHAIN_PORT": "abc"}, None, "POLCHAIN_PORT='abc': expected an integer"),
    (("--port", "70000"), {}, None, "--port: 70000 is not a TCP port"),
    (("--preset", "nonexistent"), {}, None, "unknown preset 'nonexistent'"),
    (("--miner", "quick"), {}, None, "unknown miner 'quick'"),
    (("--poll-interval", "0"), {}, None, "--poll-interval: 0.0 is not positive"),
    (("--assume-valid", "xyz"), {}, None, "'xyz' is not a 64-hex block hash"),
    (("--peer", "ftp://x"), {}, None, "'ftp://x' is not an http(s):// URL"),
    (("--spec", "/nonexistent/spec.json"), {}, None, "no such file"),
    ((), {}, "port = 'x'\n", "port = 'x': expected an integer"),
    ((), {}, "mine = 1\n", "mine = 1: expected true or false"),
    ((), {}, "colour = 'blue'\n", "unknown setting 'colour'"),
    ((), {}, "datadir = '/x'\n", "cannot set it"),
    ((), {}, "port = \n", "not valid TOML"),
])
def test_bad_values_are_one_line_errors(tmp_path, flags, env, config, message):
    if config is not None:
        (tmp_path / CONFIG_FILE).write_text(config)
        env = {**env, "POLCHAIN_DATADIR": str(tmp_path)}
    with pytest.raises(SettingsError) as err:
        load_settings(parse(*flags), env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_datadir_aliases_and_the_dataset_cache(tmp_path):
    assert load_settings(parse("--data-dir", str(tmp_path)), {}).datadir == Path(tmp_path)
    s = load_settings(parse("--datadir", "a", "--dataset-dir", "b"), {"POLCHAIN_DATA_DIR": "c"})
    assert (s.datadir, s.dataset_dir) == (Path("a"), Path("b"))
    assert load_settings(parse(), {"POLCHAIN_DATA_DIR": "c"}).dataset_dir == Path("c")   # the old variable
    with pytest.raises(SystemExit):
        parse("--datadir", "a", "--data-dir", "b")            # one setting, two different values
