"""Scenario files are checked whole before anything runs: a typo must not be ignored silently."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sml_sim.config import SCENARIO_DIR, load_scenario
from sml_sim.data.base import DataError

DEMO = (SCENARIO_DIR / "demo.toml").read_text()


def edited(tmp_path: Path, old: str, new: str) -> Path:
    assert old in DEMO, old
    path = tmp_path / "edited.toml"
    path.write_text(DEMO.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("[methods.full]\nepochs = 10", "[methods.full]\nepoch = 10", "unknown setting 'epoch' (did you mean 'epochs'?)"),
    ("[methods.full]", "[methods.fulll]", "[methods.fulll] names no method: did you mean [methods.full]?"),
    ("[run]", "[runn]", "unknown top-level section key(s) runn (did you mean 'run'?)"),
    ("[pretrain]      #", "[pretrain]\nlearning_rate = 0.1\n#", "unknown [pretrain] key(s) learning_rate"),
    ("lr = 0.01\n", "lr = -0.01\n", "[pretrain] lr must be a number > 0, not -0.01"),
    ("fc_size = 64\n", "fc_size = 64.5\n", "fc_size must be a whole number"),
    ("fc_size = 64\n", "fc_size = 0\n", "fc_size must be a whole number > 0, not 0"),
    ('theta_init = "he"', 'theta_init = "hee"', "theta_init must be one of pytorch, he, not \"hee\""),
    ("lr_theta = 0.001", 'lr_theta = "fast"', "lr_theta must be a number > 0, not \"fast\""),
    ("seed = 0\n\n[run]", 'seed = 0\nperiods = "ten"\n\n[run]', "[dataset] periods must be a whole number"),
    ("seed = 0\n\n[run]", 'seed = 0\n[dataset.csv]\nuser_column = "u"\n\n[run]',
     "unknown [dataset.csv] key(s) user_column (did you mean 'user_col'?)"),
    ('methods = ["sml", "full", "fine", "spmf", "pop", "random"]', 'methods = ["SML_S"]',
     "unknown method 'SML_S' (did you mean 'sml-s'?)"),
    ('methods = ["sml", "full", "fine", "spmf", "pop", "random"]', 'methods = "pop"',
     "[run] methods must be a list of names"),
    ("[methods.sml]  ", "[methods.sml]\nuse_fc = 1\n", "use_fc must be true or false"),
    ('protocol = "synthetic-yelp"', 'protocl = "synthetic-yelp"',
     "unknown [dataset] key(s) protocl (did you mean 'protocol'?)"),
    ('protocol = "synthetic-yelp"', 'protocol = "synthetic-yelpp"', "not 'synthetic-yelpp' (did you mean "),
])
def test_a_scenario_typo_or_bad_value_is_refused_with_the_place_and_a_hint(tmp_path, old, new, message):
    with pytest.raises(DataError) as exc:
        load_scenario(edited(tmp_path, old, new))
    assert message in str(exc.value)
    assert str(exc.value).startswith(str(tmp_path))  # names the file


def test_a_variant_is_checked_with_the_settings_it_inherits(tmp_path):
    # sml-s takes [methods.sml]'s settings: a bad one there is reported for the variant too
    path = edited(tmp_path, 'methods = ["sml",', 'methods = ["sml-s",')
    load_scenario(path)  # fine as shipped
    with pytest.raises(DataError, match="batch_w_hat must be a whole number > 0"):
        load_scenario(edited(tmp_path, "batch_w_hat = 64", "batch_w_hat = 0"))


def _with_sml(tmp_path: Path, sml_settings: str, extra_sections: str) -> Path:
    """The demo scenario with settings added to [methods.sml] and sections before [methods.full]."""
    path = edited(tmp_path, "[methods.sml]  ", f"[methods.sml]\n{sml_settings}\n")
    path.write_text(path.read_text().replace("[methods.full]", extra_sections + "[methods.full]", 1))
    return path


def test_a_variant_setting_that_does_nothing_is_refused_but_a_base_section_may_hold_it(tmp_path):
    """`n1 = 4` under [methods.sml-ws] was accepted and ignored: the weighted sum has no filters."""
    for section, idle in (("[methods.sml-ws]\nn1 = 4\n", "n1 does nothing for sml-ws"),
                          ("[methods.sml-cnn]\nconv_layers = 3\n", "conv_layers does nothing for sml-cnn"),
                          ("[methods.sml-fc]\nfc_size = 32\n", "fc_size does nothing for sml-fc"),
                          ('[methods.mine]\nkind = "sml-mlp"\nalpha = 0.3\n', "alpha does nothing for mine")):
        with pytest.raises(DataError, match=idle):
            load_scenario(edited(tmp_path, "[methods.full]", section + "[methods.full]"))
    # judged by the transfer the variant runs with, which it may inherit from [methods.sml]
    with pytest.raises(DataError, match="n1 does nothing for sml-s"):
        load_scenario(_with_sml(tmp_path, 'transfer = "weighted-sum"', "[methods.sml-s]\nn1 = 4\n"))
    load_scenario(_with_sml(tmp_path, 'transfer = "mlp"\nmlp_hidden = 256', "[methods.sml-s]\nmlp_hidden = 128\n"))
    # what [methods.sml] holds, its variants inherit: a weighted-sum alpha there is for sml-ws
    load_scenario(edited(tmp_path, "[methods.full]", "[methods.sml-ws]\nalpha = 0.2\n[methods.full]"))
    load_scenario(edited(tmp_path, "[methods.sml]  ", "[methods.sml]\nalpha = 0.3\n"))


def test_bundled_scenarios_pass_their_own_checks():
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        load_scenario(path)


def test_a_bad_scenario_leaves_the_store_untouched(cli, tmp_path):
    db = tmp_path / "s.db"
    r = cli("run", "demo", "--db", db, "--methods", "pop", "--periods", "12")
    assert r.exit_code == 0, r.stdout + r.stderr
    before = db.read_bytes()
    bad = edited(tmp_path, "[methods.full]\nepochs = 10", "[methods.full]\nepochs = -1")
    r = cli("run", bad, "--db", db)
    assert r.exit_code == 2
    assert "[methods.full] epochs must be a whole number >= 0" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert db.read_bytes() == before


def test_methods_command_lists_a_methods_settings(cli):
    r = cli("methods", "sml-s")
    assert r.exit_code == 0
    assert "theta_init" in r.stdout and "pytorch, he" in r.stdout
    assert "true (this variant)" in r.stdout  # freeze_theta_serving, the ablation's preset
    r = cli("methods", "nope")
    assert r.exit_code == 2 and "unknown method 'nope'" in r.stderr


@pytest.mark.parametrize("section, ok", [
    ("[methods.gru4rec]\nnegatives = 0", True),  # full softmax
    ("[methods.sml-ws-fixed]\nalpha = 0.0", True),
    ("[methods.sml-ws-fixed]\nalpha = 1.0", True),
    ("[methods.sml-cnn]\nconv_layers = 0", False),  # sml-cnn has no conv layers: the setting does nothing
    ("[methods.sml-ws]\nalpha = 1.0", False),  # a learned alpha starts strictly inside (0, 1)
    ("[methods.full]\nepochs = inf", False),
])
def test_range_rules_follow_what_each_method_accepts(tmp_path, section, ok):
    path = tmp_path / "s.toml"
    path.write_text(DEMO + "\n" + section + "\n")
    if ok:
        load_scenario(path)
    else:
        with pytest.raises(DataError):
            load_scenario(path)


def test_sml_with_conv_layers_needs_at_least_one(tmp_path):
    with pytest.raises(DataError, match="conv_layers must be at least 1 while use_conv is true"):
        load_scenario(edited(tmp_path, "fc_size = 64\n", "fc_size = 64\nconv_layers = 0\n"))


@pytest.mark.parametrize("old, new, message", [
    ("seed = 0\n\n[pretrain]", "seed = -1\n\n[pretrain]", "[run] seed must be 0 or more and below 2^63, not -1"),
    ("seed = 0\n\n[pretrain]", "seed = 9223372036854775808\n\n[pretrain]", "[run] seed must be 0 or more and below 2^63"),
    ("seed = 0\n\n[pretrain]", 'seed = 0\ndevice = "tpu"\n\n[pretrain]', "[run] device must be auto, cpu or cuda"),
])
def test_run_section_values_are_checked(tmp_path, old, new, message):
    with pytest.raises(DataError, match=re.escape(message)):
        load_scenario(edited(tmp_path, old, new))


@pytest.mark.parametrize("section, message", [
    ('[methods.full5]\nkind = "fulll"', "[methods.full5] kind 'fulll' is not a method (did you mean 'full'?)"),
    ("[methods.sml-s]\nfreeze_theta_serving = false", "undoes what defines sml-s"),
    ("[methods.spmf]\nbatch_size = 20.0", "batch_size must be a whole number > 0, not 20.0"),
    # a built-in's name silently ran another method: results said "pop" for SML's numbers
    ('[methods.pop]\nkind = "sml"', '[methods.pop] kind = "sml": pop is a built-in method'),
    ('[methods.sml-s]\nkind = "sml"', "Give the section a name of its own, e.g. [methods.sml-2]"),
    ('[methods."a,b"]\nkind = "full"', "no spaces or commas: it must be usable in --methods a,b"),
    ('[methods.""]\nkind = "full"', "a method name starts with a letter or digit"),
    ('[methods."-lead"]\nkind = "full"', "a method name starts with a letter or digit"),
    ('[methods.my.cfg]\nkind = "full"', '[methods.my] holds a table, cfg: method settings are plain values (a section '
                                         'name with a dot, [methods.my.cfg], needs quotes: [methods."my.cfg"])'),
    ('[methods.SML]\nkind = "sml"', "differs from the built-in method sml only by case"),
    ("[methods.sml-a]\nouter_iters = 3", 'a configuration of your own needs a kind, e.g. kind = "sml" (or did you mean '
                                         "[methods.sml-s]?)"),
    ("[methods.sml-n]\nouter_iters = -1", "outer_iters must be a whole number > 0, not -1"),
    ("[methods.fine]\nepochs = true", "epochs must be a whole number >= 0, not true"),
    ("[methods.sml-n]\nn1 = 9999999999999999999", "n1 must be at most 1,000,000,000"),
    (f'[methods.{"a" * 65}]\nkind = "fine"', "a method name has at most 64 characters"),
    ('[methods.fine-x]\nkind = "fine"\n[methods.FINE-X]\nkind = "fine"', "differ only by case; rename one"),
    ("[methods.sml-s]\nfreeze_theta_serving = false", "freeze_theta_serving = false undoes what defines sml-s "
                                                    "(freeze_theta_serving = true)"),
])
def test_a_kind_typo_a_variant_undone_and_a_float_count_are_refused(tmp_path, section, message):
    path = tmp_path / "s.toml"
    path.write_text(DEMO.replace('methods = ["sml",', 'methods = ["full5", "sml",') + "\n" + section + "\n"
                    if "full5" in section else DEMO + "\n" + section + "\n")
    with pytest.raises(DataError) as exc:
        load_scenario(path)
    assert message in str(exc.value)


def test_methods_lists_allowed_ranges_and_keeps_its_brackets(cli):
    r = cli("methods", "gru4rec")
    assert "negatives" in r.stdout and "whole number >= 0" in r.stdout and "from 0 to below 1" in r.stdout
    assert "[methods.METHOD]" in cli("methods").stdout
    assert "did you mean 'full'" in cli("methods", "fulll").stderr


def test_a_bad_dataset_value_from_a_scenario_names_the_file(cli, tmp_path):
    path = edited(tmp_path, "seed = 0\n\n[run]", "seed = -3\n\n[run]")  # the [dataset] seed
    r = cli("run", path, "--db", tmp_path / "x.db")
    assert r.exit_code == 2
    assert "[dataset] seed must be" in r.stderr and f"(settings from {path})" in r.stderr


def test_every_setting_of_every_method_says_what_it_means(cli):
    from sml_sim.retrainers import METHODS

    for name, (cls, _, _) in METHODS.items():
        assert set(cls.meanings) >= set(cls.defaults), (name, set(cls.defaults) - set(cls.meanings))
    assert "0: full softmax" in cli("methods", "gru4rec").stdout


def test_a_variant_section_naming_its_own_kind_still_inherits():
    """[methods.sml-s] kind = "sml-s" silently dropped [methods.sml]'s settings (and changed results)."""
    from sml_sim.retrainers import scenario_params

    params = {"sml": {"outer_iters": 1, "fc_size": 8}, "sml-s": {"kind": "sml-s", "l1": 1e-4}}
    got = scenario_params("sml-s", params)
    assert got == scenario_params("sml-s", {"sml": {"outer_iters": 1, "fc_size": 8}, "sml-s": {"l1": 1e-4}})
    assert got["outer_iters"] == 1 and got["fc_size"] == 8 and got["l1"] == 1e-4 and got["freeze_theta_serving"]
