"""Loading weights safely: local files without running pickled code, torchvision downloads with clear offline errors."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .pt/.pth (weights_only) or .safetensors; refuses files needing code execution."""
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"weights file not found: {p}", "check the path")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CnnlabError(f"{p}: reading .safetensors needs the 'safetensors' package",
                              "pip install safetensors") from None
        return load_file(str(p))
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CnnlabError(f"{p}: refused, loading it would execute pickled code ({str(e).splitlines()[0][:80]})",
                          "only load weights you trust; re-save them as a plain state_dict or .safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CnnlabError(f"{p}: not a readable PyTorch weights file ({type(e).__name__})",
                          "the file is truncated or of another format") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # a cnnlab checkpoint
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnnlabError(f"{p}: does not hold a state dict of tensors", "save model.state_dict()")
    return obj


def pretrained_state(arch: str, weights: str | None) -> dict[str, torch.Tensor] | None:
    """State dict for a torchvision architecture: None, 'imagenet' (download/cache) or a local file path."""
    if weights in (None, "", "none", "random"):
        return None
    if weights != "imagenet":
        return load_weights_file(weights)
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise CnnlabError(f"torchvision has no weights for '{arch}'") from None
    try:
        return enum.DEFAULT.get_state_dict(progress=False)
    except Exception as e:  # urllib/OSError/hash errors: all mean 'could not get the file'
        url = enum.DEFAULT.url
        raise CnnlabError(
            f"could not download ImageNet weights for {arch} ({type(e).__name__}: offline?)",
            f"fetch {url} on a machine with internet and pass its path as the weights (e.g. --weights FILE)",
        ) from None


def load_compatible(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy every tensor whose name and shape match; report what was loaded, skipped and left as initialised."""
    own = model.state_dict()
    loaded, mismatched = [], []
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            own[k] = v.to(own[k].dtype)
            loaded.append(k)
        elif k in own:
            mismatched.append(f"{k} {tuple(v.shape)} -> {tuple(own[k].shape)}")
    model.load_state_dict(own)
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    return {"loaded": loaded, "shape_mismatch": mismatched, "not_in_source": missing, "not_in_model": unused}
