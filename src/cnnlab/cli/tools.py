"""`cnnlab completion bash|zsh` (a completion script made from the parser itself), `cnnlab cache list|clear` (the
decoded cache) and `cnnlab recipes [--copy DIR]` (the recipes shipped in the package, for a wheel install)."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cnnlab
from cnnlab.errors import CnnlabError

# bash (and zsh through bashcompinit): the words after `cnnlab` pick a command path ("data check"); an option is
# completed from that command's options, anything else from its sub-commands, else file names (-o default)
BASH = r"""# cnnlab completion for bash (zsh: {zsh}); made by `cnnlab completion`
declare -A _cnnlab_subs=( {subs} )
declare -A _cnnlab_opts=( {opts} )
_cnnlab() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" key="cnnlab" word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ " ${{_cnnlab_subs[$key]}} " == *" $word "* ]]; then key="$key $word"; fi
    done
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "${{_cnnlab_opts[$key]}}" -- "$cur") )
    else
        COMPREPLY=( $(compgen -W "${{_cnnlab_subs[$key]}}" -- "$cur") )
    fi
}}
complete -o default -F _cnnlab cnnlab
"""
ZSH_HEAD = "autoload -U +X bashcompinit && bashcompinit\n"


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The script for `shell`, listing every command path's sub-commands and options as the parser has them."""
    from cnnlab.cli.examples import commands

    paths = {"cnnlab": parser, **{f"cnnlab {name}": sub for name, sub in commands(parser).items()}}
    subs, opts = {}, {}
    for key, p in paths.items():
        subs[key] = " ".join(n.split()[-1] for n in paths if n.rsplit(" ", 1)[0] == key and n != key)
        opts[key] = " ".join(o for a in p._actions for o in a.option_strings)
    entries = lambda d: " ".join(f'["{k}"]="{v}"' for k, v in d.items())  # noqa: E731
    script = BASH.format(subs=entries(subs), opts=entries(opts), zsh="`cnnlab completion zsh`")
    return ZSH_HEAD + script if shell == "zsh" else script


def _cmd_completion(a: argparse.Namespace) -> int:
    from cnnlab.cli import build_parser

    print(completion_script(build_parser(), a.shell), end="")
    return 0


def _cmd_cache(a: argparse.Namespace) -> int:
    from cnnlab.data.cache import CACHE_DIR_ENV, cache_root
    from cnnlab.data.cache_admin import clear, entries

    folder = cache_root(a.dir)
    if a.cache_cmd == "list":
        found = entries(folder)
        for e in found:
            where = e.root + (" (gone)" if e.stale else "")
            print(f"{e.bytes / 2**20:9.1f} MB  {e.written or '?':19}  {e.format or '?'} {e.split or '?'}  {where}")
        total = sum(e.bytes for e in found)
        print(f"{len(found)} entries, {total / 2**20:.1f} MB in {folder} (data.cache_dir, else ${CACHE_DIR_ENV}, "
              "else ~/.cache/cnnlab/decoded)")
        return 0
    removed, others = clear(folder, stale_only=a.stale)
    kept = f"; {others} folders not written by cnnlab left in place" if others else ""
    print(f"removed {len(removed)} {'stale ' if a.stale else ''}entries ({sum(e.bytes for e in removed) / 2**20:.1f} "
          f"MB) from {folder}{kept}")
    return 0


def recipes_folder() -> Path:
    """The recipes shipped with cnnlab: inside the package (a wheel), or the checkout's recipes/ it links to."""
    folder = Path(cnnlab.__file__).resolve().parent / "recipes"
    if not folder.is_dir():
        raise CnnlabError(f"no recipes beside the cnnlab package ({folder})", "reinstall cnnlab: pip install cnnlab")
    return folder


def _cmd_recipes(a: argparse.Namespace) -> int:
    folder = recipes_folder()
    files = sorted(p.relative_to(folder) for p in folder.rglob("*.yaml"))
    if a.copy is None:
        for f in files:
            print(f)
        print(f"{len(files)} recipes in {folder}; copy them out to edit: cnnlab recipes --copy DIR")
        return 0
    dest = Path(a.copy)
    if dest.exists() and any(dest.iterdir()):
        raise CnnlabError(f"{dest} exists and is not empty; recipes are never copied over files",
                          "choose a new folder: cnnlab recipes --copy my_recipes")
    shutil.copytree(folder, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"copied {len(files)} recipes to {dest}; e.g. cnnlab train {dest / 'endovis' / 'a_baseline.yaml'} "
          "--set data.root=data/endovis_synth")
    return 0


def register(sub) -> None:
    """Add `cnnlab completion`, `cnnlab cache list|clear` and `cnnlab recipes`."""
    c = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    c.add_argument("shell", choices=["bash", "zsh"])
    c.set_defaults(func=_cmd_completion)
    cache = sub.add_parser("cache", help="list or clear the decoded-image cache")
    actions = cache.add_subparsers(dest="cache_cmd", required=True)
    for name, text in (("list", "cnnlab's entries: size, date, format, split and data root"),
                       ("clear", "remove cnnlab's entries (never folders cnnlab did not write)")):
        p = actions.add_parser(name, help=text)
        p.add_argument("--dir", metavar="DIR", help="the cache folder (default: $CNNLAB_CACHE_DIR, else "
                       "~/.cache/cnnlab/decoded; a recipe's data.cache_dir)")
        if name == "clear":
            p.add_argument("--stale", action="store_true", help="only entries whose data folder is gone")
        p.set_defaults(func=_cmd_cache)
    r = sub.add_parser("recipes", help="list the recipes shipped with cnnlab, or copy them out to edit")
    r.add_argument("--copy", metavar="DIR", help="copy every recipe into DIR (new or empty)")
    r.set_defaults(func=_cmd_recipes)
