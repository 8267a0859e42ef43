"""The CLI's conventions (issue 33): --version without torch, exit codes per case, the run dir's .lock only while a
run lives, shell completion, the decoded cache's list/clear, recipes reachable from an installed package."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import cnnlab
from cnnlab.cli import main
from cnnlab.engine.rundir import LOCK, run_dir_lock
from cnnlab.errors import CnnlabError

ROOT = Path(__file__).resolve().parents[2]


def test_version_names_cnnlab_torch_and_the_cpu_without_importing_torch():
    code = ("import sys\nfrom cnnlab.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
            "    print('exit', e.code)\nprint('torch imported', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"cnnlab {cnnlab.__version__}")
    assert "(git " in lines[0]  # this test runs from a checkout
    assert f"torch {metadata.version('torch')}" in lines and lines[2].startswith("python ")
    assert lines[3].startswith("cpu ") and len(lines[3]) > 5
    assert lines[-2:] == ["exit 0", "torch imported False"]


def test_exit_codes(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:  # usage error: argparse's own line, exit 2
        main(["train", "--no-such-flag"])
    assert e.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2  # input error: one line
    assert capsys.readouterr().err.startswith("cnnlab: error: ")
    from cnnlab.cli import data

    def stopped(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "_cmd_synth", stopped)  # Ctrl-C outside a run
    assert main(["data", "synth", "endovis", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "cnnlab: interrupted"


def test_a_bug_exits_1_with_its_traceback(tmp_path):
    code = ("import sys\nfrom cnnlab.cli import data, main\n"
            "def bug(a):\n    raise ValueError('a bug')\n"
            "data._cmd_synth = bug\nsys.exit(main(['data', 'synth', 'endovis', '--out', sys.argv[1]]))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and out.stderr.strip().endswith("ValueError: a bug")


def test_the_lock_holds_the_pid_while_the_run_lives_and_goes_when_it_ends(tmp_path):
    (tmp_path / LOCK).write_text("99999999")  # left by a killed run: no process holds it, it is taken over
    with run_dir_lock(tmp_path):
        assert (tmp_path / LOCK).read_text() == str(os.getpid())
        holder = subprocess.run(  # another process cannot take it
            [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX | "
             "fcntl.LOCK_NB)", str(tmp_path / LOCK)], capture_output=True, text=True, timeout=60)
        assert holder.returncode != 0 and "BlockingIOError" in holder.stderr
    assert not (tmp_path / LOCK).exists()
    with run_dir_lock(tmp_path):  # and the next run takes a new one
        assert (tmp_path / LOCK).read_text() == str(os.getpid())
    assert not (tmp_path / LOCK).exists()


def test_a_lock_file_removed_under_a_waiting_locker_is_not_taken(tmp_path, monkeypatch):
    """The race the removal opens: B opened .lock, A removed it and let go, B's flock then succeeds on a file no
    longer at the path. B must notice (the inode differs or is gone) and open the path again."""
    from cnnlab.engine import rundir

    real_flock, calls = rundir.fcntl.flock, []

    def flock_after_removal(fd, op):
        calls.append(fd)
        if len(calls) == 1:  # A ends between B's open and B's flock: the file B opened is unlinked
            (tmp_path / LOCK).unlink()
        return real_flock(fd, op)

    monkeypatch.setattr(rundir.fcntl, "flock", flock_after_removal)
    (tmp_path / LOCK).write_text("")
    with run_dir_lock(tmp_path):
        assert len(calls) == 2  # the first descriptor was let go, the path opened and locked again
        assert os.path.samestat(os.fstat(rundir._HELD[str(tmp_path.resolve())]), os.stat(tmp_path / LOCK))
    assert not (tmp_path / LOCK).exists()


def test_lock_refusal_still_names_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import fcntl, os, sys\nf = open(sys.argv[1], 'a+')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
                                "f.truncate(0); f.write(str(os.getpid())); f.flush()\n"
                                "print('locked', flush=True); sys.stdin.read()"),
         str(tmp_path / LOCK)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CnnlabError, match=f"in use by process {holder.pid}"):
            with run_dir_lock(tmp_path):
                pass
        assert (tmp_path / LOCK).read_text() == str(holder.pid)  # the refused locker removed nothing
    finally:
        holder.communicate("", timeout=60)


def _complete(script: str, words: list[str]) -> list[str]:
    """What bash completes for `words` (the last one being typed) with the generated script loaded."""
    line = " ".join(f"'{w}'" for w in words)
    code = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _cnnlab\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [w for w in out.stdout.splitlines() if w]


def test_bash_completion_completes_commands_subcommands_and_options(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert _complete(script, ["cnnlab", "tr"]) == ["train"]
    assert _complete(script, ["cnnlab", "train", "--re"]) == ["--resume"]
    assert _complete(script, ["cnnlab", "data", "c"]) == ["check"]
    assert _complete(script, ["cnnlab", "data", "check", "--im"]) == ["--images"]
    assert _complete(script, ["cnnlab", "cache", "clear", "--st"]) == ["--stale"]
    assert set(_complete(script, ["cnnlab", "pre"])) == {"predict"}
    assert main(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n") and zsh.endswith(script)


def test_every_command_ends_its_help_with_examples_that_parse():
    import shlex

    from cnnlab.cli import build_parser
    from cnnlab.cli.examples import commands

    parser = build_parser()
    for name, sub in commands(parser).items():
        lines = [ln.strip() for ln in (sub.epilog or "").splitlines()[1:]]
        assert len(lines) >= 2 or name in ("data",), f"cnnlab {name}: no examples"
        for line in lines:
            argv = shlex.split(line)
            assert argv[0] == "cnnlab"
            if name == "completion" and ("<" in line or ">" in line):
                argv = argv[:3]  # a shell redirection, not an argument
            parser.parse_args(argv[1:])  # an example with a wrong flag or a missing argument exits 2 here
    assert "examples:\n  cnnlab train " in commands(parser)["train"].format_help()


def _entry(folder: Path, name: str, root: Path | None) -> Path:
    from cnnlab.data.cache import MARKER

    (folder / name).mkdir(parents=True)
    (folder / name / MARKER).write_bytes(b"")
    (folder / name / "images.npy").write_bytes(b"x" * 1000)
    (folder / name / "meta.json").write_text(json.dumps({"format": "folders", "split": "train", "root": str(root),
                                                         "written": "2026-12-07 10:00:00"}))
    return folder / name


def test_cache_list_and_clear_touch_only_cnnlabs_entries(tmp_path, capsys):
    cache = tmp_path / "cache"
    kept = _entry(cache, "folders-train-aaa", tmp_path)
    gone = _entry(cache, "folders-train-bbb", tmp_path / "deleted_data")
    (cache / "someone_elses").mkdir()
    (cache / "someone_elses" / "meta.json").write_text("{}")
    assert main(["cache", "list", "--dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'deleted_data'} (gone)" in out and "2 entries" in out and "someone_elses" not in out
    assert main(["cache", "clear", "--stale", "--dir", str(cache)]) == 0
    assert "removed 1 stale entries" in capsys.readouterr().out
    assert kept.is_dir() and not gone.exists()
    assert main(["cache", "clear", "--dir", str(cache)]) == 0
    assert "1 folders not written by cnnlab left in place" in capsys.readouterr().out
    assert not kept.exists() and (cache / "someone_elses" / "meta.json").is_file()


def test_recipes_lists_and_copies_the_shipped_recipes(tmp_path, capsys):
    shipped = sorted(p.relative_to(ROOT / "recipes") for p in (ROOT / "recipes").rglob("*.yaml"))
    assert main(["recipes"]) == 0
    assert capsys.readouterr().out.splitlines()[:-1] == [str(p) for p in shipped]
    assert main(["recipes", "--copy", str(tmp_path / "mine")]) == 0
    assert sorted(p.relative_to(tmp_path / "mine") for p in (tmp_path / "mine").rglob("*.yaml")) == shipped
    from cnnlab.config import load_recipe

    assert load_recipe(tmp_path / "mine" / "endovis" / "b_augment.yaml").name  # 'base:' chains still resolve
    assert main(["recipes", "--copy", str(tmp_path / "mine")]) == 2  # never copied over files
