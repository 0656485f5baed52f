"""Base weights from a local file: read, their keys mapped onto the model, loaded, hashed.

The model room's one reader of files (as a data loader reads its own), so that a run's
pretrained transformer is built the same way by the trainer, a resumed run and the
evaluation. Nothing is ever downloaded.

A file is a safetensors file or a weights-only torch state dict, possibly inside a
checkpoint's `model` or `state_dict` entry (a full caat `best.pt` works too). Its keys
are mapped onto the model: wrapper prefixes (`module.`, `model.`, `base_model.`,
`backbone.`, caat's `1.`) are stripped, input-normalisation buffers (`normalize.mean`,
caat's `0.std`) dropped (the model brings its own), timm's own conversion for the
family applied (older Swin layouts, a position embedding resampled to this image size),
and the classification head dropped: the head is new, for this data set's classes.
What is left must fit the model exactly, or a `ConfigError` names the counts and the
first keys. The file's sha256 is computed once per path, size and mtime.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from caat_app.errors import ConfigError
from caat_app.models.adapters import head_prefix
from caat_app.present import visible

PREFIXES = ("module.", "model.", "base_model.", "backbone.", "1.")
"""Wrapper prefixes stripped from the front of a key, repeatedly (`1.`: caat's body)."""
SHOWN = 3
"""Keys named in a complaint before `…`."""
_CHUNK = 1 << 20

_HASHES: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class BaseWeights:
    """The file a model's frozen base came from: what a PEFT checkpoint refers to."""

    path: str
    sha256: str
    tensors: int  # tensors loaded into the model
    mapping: str  # what was done to the file's keys, in words

    def describe(self) -> str:
        return (
            f"base weights {visible(self.path)} (sha256 {self.sha256[:12]}…): "
            f"{self.tensors} tensors loaded; {self.mapping}"
        )


def file_sha256(path: str | Path) -> str:
    """The file's sha256 in hex; cached per (path, size, mtime), so a file is read once."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with resolved.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length, then the JSON header."""
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _unwrap(state: Any, shown: str) -> dict[str, Tensor]:
    """The state dict inside a checkpoint (its `model` or `state_dict` entry), checked."""
    if (
        isinstance(state, dict)
        and isinstance(state.get("base"), dict)
        and state["base"].get("partial")
    ):
        base = visible(str(state["base"].get("file")))
        raise ConfigError(
            f"weights {shown} is a checkpoint of a caat PEFT run (its trained part only); "
            f"give the base weights it was fine-tuned from, {base}"
        )
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ConfigError(f"weights {shown} holds no state dict of named tensors")
    return state


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The named tensors of a safetensors file or a weights-only torch file, on the CPU."""
    file = Path(path)
    shown = visible(str(path))
    if not file.is_file():
        raise ConfigError(f"weights {shown}: no such file (moved or deleted?)")
    try:
        if _is_safetensors(file):
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged bytes or a pickle of more than weights
        raise ConfigError(
            f"weights {shown} is neither a safetensors file nor a weights-only torch state "
            f"dict ({type(exc).__name__} reading it)"
        ) from None
    return _unwrap(state, shown)


def _strip(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _is_input_norm(key: str) -> bool:
    """`mean`/`std` at the top or one level down: a normalisation layer's buffers."""
    parts = key.split(".")
    return len(parts) <= 2 and parts[-1] in ("mean", "std")


def _timm_filter(family: str) -> Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]:
    if family == "swin":
        from timm.models.swin_transformer import checkpoint_filter_fn
    else:
        from timm.models.vision_transformer import checkpoint_filter_fn
    return checkpoint_filter_fn


def map_keys(
    state: dict[str, Tensor], body: nn.Module, family: str
) -> tuple[dict[str, Tensor], list[str]]:
    """The file's tensors under the body's names, its head and normaliser left out; and
    what was done, in words."""
    notes = []
    norms = [k for k in state if _is_input_norm(k)]
    renamed = {_strip(k): v for k, v in state.items() if k not in norms}
    if len(renamed) < len(state) - len(norms):
        raise ConfigError("weights: two keys of the file are one after stripping prefixes")
    stripped = sum(_strip(k) != k for k in state if k not in norms)
    if stripped:
        notes.append(f"prefixes stripped from {stripped} keys")
    if norms:
        notes.append(f"input normalisation dropped ({', '.join(norms)})")
    try:
        converted = _timm_filter(family)(dict(renamed), body)
    except Exception:  # keys of another model: the fit check below says which
        converted = renamed
    changed = sum(k not in renamed or renamed[k] is not v for k, v in converted.items())
    if changed or len(converted) != len(renamed):
        notes.append(f"timm's {family} conversion changed {changed} keys")
    prefix = head_prefix(body) + "."
    head = sorted(k for k in converted if k.startswith(prefix))
    if head:
        notes.append(f"old head dropped ({', '.join(head)})")
    kept = {k: v for k, v in converted.items() if not k.startswith(prefix)}
    return kept, notes


def some_keys(keys: list[str]) -> str:
    """The first keys of a complaint, `…` for the rest."""
    shown = ", ".join(keys[:SHOWN])
    return shown + (", …" if len(keys) > SHOWN else "")


def _shape(t: Any) -> str:
    return "×".join(str(d) for d in t.shape) or "scalar"


def fit_complaint(given: dict[str, Tensor], body: nn.Module, prefix: str) -> str | None:
    """What keeps `given` from fitting the body (its head aside), or None."""
    expected = {k: v for k, v in body.state_dict().items() if not k.startswith(prefix)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    reshaped = sorted(k for k in given if k in expected and given[k].shape != expected[k].shape)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({some_keys(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({some_keys(unexpected)})")
    if reshaped:
        k = reshaped[0]
        first = f"{k}: {_shape(given[k])} in the file, {_shape(expected[k])} here"
        parts.append(
            f"{len(reshaped)} of another shape ({first}{', …' if len(reshaped) > 1 else ''})"
        )
    return ", ".join(parts) or None


def load_base_weights(body: nn.Module, path: str, *, model: str, family: str) -> BaseWeights:
    """Load the file's weights into the body (all but its new head); a ConfigError in one
    line when they do not fit."""
    state = read_state(path)
    mapped, notes = map_keys(state, body, family)
    complaint = fit_complaint(mapped, body, head_prefix(body) + ".")
    if complaint:
        raise ConfigError(f"weights {visible(path)} do not fit {model}: {complaint}")
    body.load_state_dict(mapped, strict=False)
    mapping = "; ".join(notes) if notes else "keys as in the file"
    return BaseWeights(str(path), file_sha256(path), len(mapped), mapping)
