"""What a checkpoint keeps of a model, and putting it back onto a freshly built one.

A model fine-tuned in a PEFT mode (head, adapter, lora) on a base from a weights file
keeps only its trainable tensors, plus a reference to the base: the file's path and its
sha256. Loading builds the base from that file again (`build_for_run`), checks its hash,
and puts the trained tensors in: the outputs are the saved model's exactly. Any other
model keeps its whole state dict, as before (a PEFT run on a random base, e.g. a
benchmark, has no file to refer to).

Both live in a checkpoint's `model` and `base` entries: plain tensors, strings and
booleans, so checkpoints still load with `weights_only=True`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from caat_app.errors import CaatError
from caat_app.models.adapters import trainable_names
from caat_app.models.weights import BaseWeights, some_keys
from caat_app.present import visible


def _base(model: nn.Module) -> BaseWeights | None:
    base = getattr(model, "base", None)
    return base if isinstance(base, BaseWeights) else None


def partial(model: nn.Module) -> bool:
    """Whether a checkpoint of this model keeps only its trainable tensors."""
    return _base(model) is not None and getattr(model, "peft", "full") != "full"


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The `model` entry of a checkpoint: the trainable tensors, or the whole state dict."""
    if partial(model):
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return model.state_dict()


def base_entry(model: nn.Module) -> dict[str, Any] | None:
    """The `base` entry of a checkpoint: the weights file the model started from, its
    sha256, the PEFT mode and whether `model` holds only the trainable part."""
    base = _base(model)
    if base is None:
        return None
    return {
        "file": base.path,
        "sha256": base.sha256,
        "peft": getattr(model, "peft", "full"),
        "partial": partial(model),
    }


def needs_base(saved: dict[str, Any]) -> bool:
    """Whether a checkpoint's model is only the trained part of a base from a file."""
    base = saved.get("base")
    return isinstance(base, dict) and bool(base.get("partial"))


def _check_base(model: nn.Module, saved_base: dict[str, Any], where: str) -> None:
    base = _base(model)
    file = visible(str(saved_base.get("file")))
    if base is None:
        raise CaatError(f"{where} holds only the part of a model trained on the base {file}")
    if base.sha256 != saved_base.get("sha256"):
        then = str(saved_base.get("sha256"))[:12]
        raise CaatError(
            f"{where}: its base weights {visible(base.path)} changed since it was saved "
            f"(sha256 {then}… then, {base.sha256[:12]}… now); put the original file back"
        )


def _key_complaint(expected: list[str], given: list[str]) -> str | None:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({some_keys(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({some_keys(unexpected)})")
    return ", ".join(parts) or None


def load_model_state(
    model: nn.Module, state: dict[str, Tensor], base: dict[str, Any] | None, where: str
) -> None:
    """Put a checkpoint's `model` (and `base`) entries into a freshly built model, in
    place (the flat buffers' views stay); a CaatError in one line when they do not fit.
    `where` names the checkpoint in the message."""
    if base is not None and base.get("partial"):
        _check_base(model, base, where)
        complaint = _key_complaint(trainable_names(model), list(state))
        if complaint:
            raise CaatError(f"{where} does not fit its model's trainable part: {complaint}")
        strict = False
    else:
        strict = True
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError:  # missing or unexpected keys, or shapes of another model
        raise CaatError(f"{where} does not fit its model; was the file replaced?") from None
