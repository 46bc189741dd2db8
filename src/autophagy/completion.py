"""A static bash completion script generated from the CLI's argparse parser (``autophagy completion bash``).

It completes the commands, ``pipeline``'s actions, each command's options, ``-S`` keys (from
``autophagy config --list``, asked when ``-S`` is being completed) and paths for everything else.
Enable it with ``source <(autophagy completion bash)``. No dependency: argcomplete is not installed.
"""

from __future__ import annotations

import argparse


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> str:
    return " ".join(o for a in parser._actions for o in a.option_strings)


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion function for ``parser`` (the CLI's) and its ``complete`` line."""
    commands = _subcommands(parser)
    cases = []
    for name, sub in commands.items():
        actions = _subcommands(sub)
        if actions:
            inner = "".join(f'            {a}) opts="{_options(p)}" ;;\n' for a, p in actions.items())
            cases.append(
                f"        {name})\n"
                f'          if [[ $COMP_CWORD -eq 2 ]]; then opts="{" ".join(actions)}"; else\n'
                f'          case "${{COMP_WORDS[2]}}" in\n{inner}          esac; fi ;;\n'
            )
        else:
            cases.append(f'        {name}) opts="{_options(sub)}" ;;\n')
    return f"""# bash completion for autophagy; enable with: source <(autophagy completion bash)
_autophagy() {{
    local cur prev opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    if [[ "$prev" == "-S" || "$prev" == "--set" ]]; then
        COMPREPLY=( $(compgen -S = -W "$(autophagy config --list 2>/dev/null | awk '!/^#/ {{print $1}}')" -- "$cur") )
        compopt -o nospace 2>/dev/null
        return
    fi
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=( $(compgen -W "{" ".join(commands)} {_options(parser)}" -- "$cur") )
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{"".join(cases)}    esac
    if [[ "$cur" == -* || -n "$opts" && $COMP_CWORD -eq 2 && "${{COMP_WORDS[1]}}" == pipeline ]]; then
        COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
    else
        COMPREPLY=( $(compgen -f -- "$cur") )
    fi
}}
complete -o filenames -F _autophagy autophagy
"""
