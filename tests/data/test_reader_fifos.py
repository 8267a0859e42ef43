"""Issue 29 probe, the readers with corrupt files (VOC, GlaS, CIFAR, MNIST: empty, truncated, a folder or a FIFO in
a file's place): every case is one line, except a FIFO named like a GlaS image, which blocked the reader forever.
Now any reader's image that is not a regular file is refused by name (common.open_image)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cnnlab.data.formats import glas
from cnnlab.data.synthetic import SYNTHETIC
from cnnlab.errors import DataError


def _in_thread(fn):
    out: list = []

    def go():
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001 (handed to the test)
            out.append(e)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(20)
    return out, t


@pytest.mark.parametrize("name", ["train_1.bmp", "train_1_anno.bmp"])
def test_a_fifo_in_place_of_a_glas_image_is_one_line(tmp_path: Path, name: str):
    root = SYNTHETIC["glas"](tmp_path / "glas", n_train=3, n_test_a=1, n_test_b=1, width=48, height=40)
    fifo = Path(root) / name
    fifo.unlink()
    os.mkfifo(fifo)
    out, t = _in_thread(lambda: glas.load(Path(root), "train"))
    if t.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # let the blocked reader go
        os.close(fd)
        pytest.fail("the reader blocked on a FIFO")
    assert isinstance(out[0], DataError) and f"{fifo}: not a regular file" in out[0].line()
