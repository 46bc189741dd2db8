"""The command line as a new user meets it (issue 14 item 6): description, --version, help with
defaults on every option, the option reference, "did you mean", --debug anywhere, bash completion."""

from __future__ import annotations

import argparse
import subprocess
from importlib.metadata import version

import pytest

from autophagy.cli import _parsers, build_parser, main
from autophagy.config import FAMILIES, ConfigError, load_config
from autophagy.option_reference import options


def run_main(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_description_and_version(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0 and "Self-consuming training loops" in out and "autophagy config --list" in out
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.strip() == f"autophagy {version('autophagy')}"


def test_every_option_has_help_and_defaults_show():
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.option_strings or action.dest} has no help"
    run = next(p for p in _parsers(build_parser()) if p.prog == "autophagy run")
    assert "(default: runs)" in run.format_help()
    seed = next(p for p in _parsers(build_parser()) if p.prog == "autophagy sample").format_help()
    assert "seed of the chain (default: 0)" in " ".join(seed.split())


def test_config_list_is_every_option_with_type_default_help(capsys):
    code, out, _ = run_main(capsys, "config", "--list")
    assert code == 0
    keys = {line.split()[0] for line in out.splitlines() if not line.startswith("#")}
    expected = {o.key for o in options(load_config(None, []))}
    assert keys == expected and "train.budget_kimg" in keys and "loop.lambdas" in keys
    line = next(line for line in out.splitlines() if line.startswith("sample.n_eval "))
    assert line.split()[1:3] == ["int", "2000"] and "samples per generation" in line
    code, out, _ = run_main(capsys, "config", "--list", "-S", "model.family=ddpm")
    assert "model.ancestral_variance" in out


#: Overrides that give a family of each data kind a config that validates (vector families need vector data,
#: text families token rows).
KIND_DATA = {
    "image": [],
    "vector": ["data.source=toy2d", "data.name=moons", "data.n_train=100", "data.n_test=100", "evaluate.features=raw"],
    "text": ["data.source=python-docs", "evaluate.features=minilm"],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_config_list_has_help_for_every_option_of_every_family(family):
    """No option of `config --list` is listed with help `-`: each field has a trailing comment."""
    cfg = load_config(None, [f"model.family={family}", *KIND_DATA[FAMILIES[family].kind]])
    assert cfg.model.family == family
    missing = [option.key for option in options(cfg) if option.help == "-"]
    assert not missing, f"model.family={family}: no help (a trailing # comment on the field's line) for {missing}"


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["rnu"], "'rnu': did you mean 'run'?"),
        (["run", "--confg", "x.yaml"], "'--confg': did you mean '--config'?"),
        (["pipeline", "sumbit"], "did you mean 'submit'?"),
    ],
)
def test_did_you_mean_for_commands_and_options(capsys, argv, hint):
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and hint in err


def test_did_you_mean_for_config_keys(capsys):
    code, _, err = run_main(capsys, "config", "-S", "train.budjet_kimg=5")
    assert code == 2 and "did you mean train.budget_kimg?" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=r"did you mean loop\.generations\?"):
        load_config(None, ["loop.generatons=2"])


def test_debug_accepted_before_and_after_the_command(capsys):
    for argv in (["--debug", "config", "-S", "train.bogus=1"], ["config", "-S", "train.bogus=1", "--debug"]):
        with pytest.raises(ConfigError):  # --debug: the traceback, not the one-line message
            main(argv)
    code, _, err = run_main(capsys, "config", "-S", "train.bogus=1")
    assert code == 2 and err.startswith("autophagy: error: unknown option(s) train.bogus")


def _complete(script: str, *words: str) -> list[str]:
    cword = len(words) - 1
    program = (
        f'{script}\nCOMP_WORDS=({" ".join(words)}); COMP_CWORD={cword}; _autophagy; printf "%s\\n" "${{COMPREPLY[@]}}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion(capsys):
    code, script, _ = run_main(capsys, "completion", "bash")
    assert code == 0 and "complete -o filenames -F _autophagy autophagy" in script
    assert _complete(script, "autophagy", "ru") == ["run"]
    assert _complete(script, "autophagy", "run", "--new") == ["--new-root"]
    assert _complete(script, "autophagy", "pipeline", "sub") == ["submit"]
    assert "--host" in _complete(script, "autophagy", "pipeline", "submit", "--h")


def test_completion_covers_every_command():
    script = main.__globals__["build_parser"]()
    commands = next(a for a in script._actions if isinstance(a, argparse._SubParsersAction)).choices
    from autophagy.completion import bash_script

    text = bash_script(script)
    assert all(f"        {name})" in text for name in commands)
