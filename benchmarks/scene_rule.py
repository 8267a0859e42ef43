"""The scene rule of `cnnlab new` (new/scene.py), measured: the layout numbers on real sets, and an A/B of the two
augmentations on a street-scene stand-in (issue 30; docs/results.md, "The scene rule").

    python benchmarks/scene_rule.py layout             # up/side of the shared real sets (read only)
    python benchmarks/scene_rule.py ab --seeds 0,1,2,3,4 --epochs 20

The A/B trains the course U-Net (width 8, depth 3) on 160 synthetic street frames (cnnlab.data.synthetic.street,
64x64, seeded 70/15/15 split) with flips both ways + quarter turns ('any') and with horizontal flips + rotations up
to 10 degrees + zoom ('upright'), equal epochs, and prints the strict mean Dice and IoU on the test split per seed.
"""
from __future__ import annotations

import argparse
import glob
import json
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"DRIVE": "drive/training/1st_manual/*", "ISBI 2012": "isbi2012_em/train/label/*",
        "EndoVis 2017": "endovis2017_hw/segmentation/train/*/*_mask.png"}
AUG = {"any": {"hflip": True, "vflip": True, "rot90": True},
       "upright": {"hflip": True, "rotate": 10.0, "crop_scale": 0.8}}


def layout() -> None:
    from cnnlab.data.formats import folders
    from cnnlab.new.scene import decide

    for name, pattern in SETS.items():
        paths = [Path(p) for p in sorted(glob.glob(str(SHARED / pattern)))]
        if paths:
            s = decide(paths, folders.discover(paths, [None] * len(paths), None))
            print(f"{name}: up {s.up:.3f}, side {s.side:.3f}, upright {s.upright}")


def ab(seeds: list[int], epochs: int) -> None:
    from cnnlab.config import recipe_from_dict
    from cnnlab.data.synthetic import street
    from cnnlab.engine.run import train

    work = Path(tempfile.mkdtemp(prefix="scene-ab-"))
    root = street.write(work / "street", seed=0, n=160, height=120, width=160)
    out = {}
    for seed in seeds:
        for name, aug in AUG.items():
            raw = {"name": f"{name}-s{seed}", "task": "segmentation", "out": str(work / "runs"),
                   "data": {"format": "folders", "root": str(root), "size": [64, 64],
                            "options": {"images": "images", "masks": "masks", "split": "random"}},
                   "model": {"name": "unet", "params": {"width": 8, "depth": 3}}, "loss": {"name": "dice_ce"},
                   "optim": {"name": "adam", "lr": 0.003, "schedule": "cosine"},
                   "train": {"epochs": epochs, "batch_size": 8, "progress": False, "patience": 1000, "threads": 1,
                             "seed": seed},
                   "augment": aug}
            s = json.loads((Path(train(recipe_from_dict(raw))) / "summary.json").read_text())["metrics"]
            out[f"{name}-s{seed}"] = (s["dice_mean"], s["iou_mean"])
            print(name, seed, out[f"{name}-s{seed}"], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["layout", "ab"])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=20)
    a = p.parse_args()
    layout() if a.what == "layout" else ab([int(s) for s in a.seeds.split(",")], a.epochs)
