"""Issue 29 probe: a disk that fills during training (a small tmpfs filled while the run trained) ended in a
traceback from the events.jsonl writer or torch's zip writer; now one line, the previous checkpoint kept, and the
resume command given. Here: /dev/full (a real ENOSPC on every write) and a save that fails as torch's does."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from cnnlab.cli.failures import os_error_line
from cnnlab.engine.checkpoint import atomic_save, load_checkpoint
from cnnlab.engine.progress import EventLog
from cnnlab.errors import CnnlabError


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_events_jsonl_on_a_full_disk_is_an_error_naming_the_file():
    events = EventLog()
    events.open(Path("/dev/full"))
    with pytest.raises(OSError) as e:
        events.write("epoch", epoch=1)
    assert e.value.errno == errno.ENOSPC and e.value.filename == "/dev/full"
    assert os_error_line(e.value).startswith("/dev/full: No space left on device — free some space there: df -h")


def test_a_checkpoint_write_on_a_full_disk_keeps_the_previous_one_and_says_how_to_resume(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, path)

    def full(obj, f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CnnlabError, match=r"no space left on the disk while writing it; the previous last.pt is "
                                          r"kept — free some space .*cnnlab train --resume"):
        atomic_save({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
