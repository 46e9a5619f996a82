"""Weight files for backbones: the ``pretrained`` setting, reading, unwrapping, strict loading, hub cache.

    normalise_pretrained("None") -> None; ("ImageNet") -> "imagenet"; ("w.pth") -> Path("w.pth")
    state = read_weight_file(path)                       # torch.save file -> {key: tensor}
    load_state_strict(backbone, state, "pretrained weight file w.pth", "the resnet50 backbone")
    path = hub_weight_file(url, size_mb, "model.pretrained=imagenet")  # torch hub cache / download

Every failure is a one-line :class:`~dmireid.errors.DmireidError` naming the file or setting.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import DmireidError

log = logging.getLogger(__name__)

Pretrained = str | Path | None  # what a backbone factory receives: None, "imagenet" or a Path

_WRAPPERS = ("state_dict", "model")  # checkpoint entries that hold the weights, tried in this order


def normalise_pretrained(pretrained) -> Pretrained:
    """``None``/``False``/``""``/``"none"`` (any case) -> None; ``"imagenet"`` (any case); else a Path."""
    if pretrained is None or pretrained is False:
        return None
    if isinstance(pretrained, (str, os.PathLike)):
        text = str(pretrained).strip()
        if text.lower() in ("", "none", "null"):
            return None
        if text.lower() == "imagenet":
            return "imagenet"
        return Path(text).expanduser()
    raise DmireidError(f"model.pretrained must be imagenet, none or a weight file path, got {pretrained!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def read_weight_file(path: str | Path) -> dict:
    """The object a ``torch.save`` file holds (loaded with ``weights_only=True`` onto the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise DmireidError(f"pretrained weight file {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise DmireidError(f"pretrained weight file {path}: not a readable torch state_dict ({_first_line(exc)})") from None


def unwrap_state(state, what: str, backbone_only: bool = True) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: ``{"state_dict"|"model": …}`` unwrapped, ``module.`` dropped.

    ``backbone_only``: a dmireid ReIDModel state_dict (``backbone.*``, ``pool.p``, ``neck.*``) and a
    DINO-style ``backbone.*``/``head.*`` dict both give their ``backbone.*`` entries, prefix removed.
    """
    for key in _WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DmireidError(f"{what}: expected a state_dict of tensors")
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if backbone_only and any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def first_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """A one-line description of how ``state`` differs from ``expected`` (keys and shapes), or None.

    The first mismatched key is the first key of ``expected`` (module order) that the file lacks or
    holds with another shape, else the first key of the file that the module lacks. Files older
    than torch 0.4.1 have no ``num_batches_tracked``: its absence is not a mismatch.
    """
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shape = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shape):
        return None
    bad = set(missing) | set(shape)
    first = next((k for k in expected if k in bad), None)
    if first is None:
        detail = f"first mismatched key {unexpected[0]} (not in the model)"
    elif first in shape:
        detail = (f"first mismatched key {first} (shape {tuple(state[first].shape)} in the file, "
                  f"{tuple(expected[first].shape)} in the model)")
    else:
        detail = f"first mismatched key {first} (missing from the file)"
    counts = f"{len(missing)} missing keys, {len(unexpected)} unexpected keys, {len(shape)} shape mismatches"
    return f"{detail}; {counts}"


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, name: str) -> None:
    """Load ``state`` into ``module`` in place (the one strict loader: backbones, checkpoints); any key
    or shape difference is a one-line error: ``{what} does not match {name}: first mismatched key …``."""
    problem = first_mismatch(module.state_dict(), state)
    if problem:
        raise DmireidError(f"{what} does not match {name}: {problem}")
    module.load_state_dict(state, strict=False)


def load_file_strict(module: nn.Module, path: str | Path, name: str, drop_prefixes: tuple[str, ...] = ("fc.",)) -> None:
    """Read a weight file, drop its classifier (``drop_prefixes``), load it strictly into ``module``."""
    what = f"pretrained weight file {path}"
    state = unwrap_state(read_weight_file(path), what)
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    load_state_strict(module, state, what, f"the {name} backbone")
    log.info("loaded %s backbone weights from %s", name, path)


def hub_checkpoints_dir() -> Path:
    """torch.hub's weight cache: ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_weight_file(url: str, size_mb: float, setting: str) -> Path:
    """The cached file for ``url`` in torch.hub's checkpoints folder; downloaded when absent.

    Like ``torch.hub.load_state_dict_from_url``: the file name is the URL's last part; a file of
    that name already in the folder is used as is; a download is checked against the hash prefix
    in the name (``name-<hash>.pth``). With no file and no internet: one line naming the file, its
    size and the folder to put it in.
    """
    name = os.path.basename(urlparse(url).path)
    folder = hub_checkpoints_dir()
    path = folder / name
    if path.is_file():
        return path
    match = re.search(r"-([a-f0-9]*)\.", name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        log.info("%s: downloading %s (%.1f MB) to %s", setting, url, size_mb, folder)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=False)
    except Exception as exc:  # noqa: BLE001 - no internet, proxy, hash mismatch: one line
        raise DmireidError(
            f"{setting}: weight file {name} ({size_mb:.1f} MB) is not in {folder} and could not be downloaded "
            f"from {url} ({_first_line(exc)}); download it elsewhere and put it in {folder}, "
            f"or pass model.pretrained=/path/to/{name}"
        ) from None
    return path
