"""The examples that end each command's `--help`: two or three command lines a user can adapt.

Kept in one table (not in each command's register) so that every command has them and a test can check it;
build_parser attaches them after the commands are registered.
"""
from __future__ import annotations

import argparse

EXAMPLES: dict[str, list[str]] = {
    "train": ["cnnlab train recipes/endovis/a_baseline.yaml --set data.root=data/endovis_synth",
              "cnnlab train recipe.yaml --set train.epochs=5 --set optim.lr=0.0003",
              "cnnlab train --resume runs/a_baseline-20260101-120000 --set train.epochs=40"],
    "demo": ["cnnlab demo", "cnnlab demo --epochs 3 --out /tmp/runs", "cnnlab demo --study"],
    "data synth": ["cnnlab data synth endovis --out data/endovis_synth", "cnnlab data synth voc --out data/voc_synth"],
    "data check": ["cnnlab data check endovis data/endovis_synth",
                   "cnnlab data check folders --images my/images --masks my/masks",
                   "cnnlab data check folders --images CamVid/train --masks CamVid/trainannot --void 11"],
    "new": ["cnnlab new --images my/images --masks my/masks --out my.yaml",
            "cnnlab new --images my/images --masks my/masks --out my.yaml --minutes 60 --encoder none",
            "cnnlab new --task classification --images my/class_folders --out cls.yaml"],
    "study": ["cnnlab study recipes/endovis/study_demo.yaml", "cnnlab study study.yaml --workers 2 --out studies",
              "cnnlab study --resume studies/study-20260101-120000"],
    "report": ["cnnlab report runs/RUN", "cnnlab report studies/STUDY --format latex"],
    "compare": ["cnnlab compare runs/a runs/b", "cnnlab compare runs/a runs/b --out table.tex"],
    "tune": ["cnnlab tune recipe.yaml --space space.yaml --trials 12",
             "cnnlab tune --resume tunes/TUNE --trials 24"],
    "predict": ["cnnlab predict runs/RUN new_images/ --out predictions",
                "cnnlab predict runs/RUN scan.png --out p --tta --window 256x256"],
    "evaluate": ["cnnlab evaluate runs/RUN", "cnnlab evaluate runs/RUN --split val --native",
                 "cnnlab evaluate runs/RUN --images other/images --masks other/masks"],
    "export": ["cnnlab export runs/RUN --format onnx", "cnnlab export runs/RUN --format torchscript --out model.pt"],
    "ensemble": ["cnnlab ensemble runs/a runs/b runs/c", "cnnlab ensemble runs/a runs/b --split val"],
    "boundary": ["cnnlab boundary runs/fcn runs/unet", "cnnlab boundary runs/a runs/b --width 5 --out band.png"],
    "conv": ['cnnlab conv --input "1 2 0; 0 1 3; 2 1 0" --filter "1 0; 0 -1"',
             'cnnlab conv --input "1 2 0 1; 0 1 3 1; 2 1 0 0; 1 1 1 1" --filter "1 0; 0 -1" --pool 2 --patch'],
    "shapes": ['cnnlab shapes "conv(5x5,5) -> maxpool(2) -> fc(10)" --input 28x28x1',
               'cnnlab shapes "conv(3x3,64,p1) -> conv(3x3,64,p1) -> maxpool(2)" --input 224x224x3 --no-work'],
    "summary": ["cnnlab summary unet --input 3x256x320 --classes 8", "cnnlab summary recipes/endovis/a_baseline.yaml"],
    "completion": ["cnnlab completion bash > ~/.local/share/bash-completion/completions/cnnlab",
                   "cnnlab completion zsh > ~/.zfunc/_cnnlab"],
    "cache": ["cnnlab cache list", "cnnlab cache clear --stale", "cnnlab cache clear --dir /scratch/cnnlab-cache"],
    "cache list": ["cnnlab cache list", "cnnlab cache list --dir /scratch/cnnlab-cache"],
    "cache clear": ["cnnlab cache clear", "cnnlab cache clear --stale"],
    "recipes": ["cnnlab recipes", "cnnlab recipes --copy my_recipes"],
}


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command and sub-command parser by its name as typed ('train', 'data check', ...)."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                out[full] = sub
                out.update(commands(sub, full))
    return out


def add_examples(parser: argparse.ArgumentParser) -> None:
    """Each command's --help ends with its examples (kept as written: the raw description formatter)."""
    for name, sub in commands(parser).items():
        lines = EXAMPLES.get(name)
        if lines:
            sub.epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
