"""Parameter-efficient fine-tuning: what of a transformer trains, and the modules added.

- `full`: every parameter trains (the default; the only mode of the CNNs).
- `head`: only the classification head trains.
- `adapter`: the Pfeiffer bottleneck adapter (Pfeiffer et al. 2020, as the paper uses)
  after every transformer block's MLP: down-projection to width/`reduction`, GELU,
  up-projection, added back to the MLP's output (a residual), before the block's own
  residual. The up-projection starts at zero, so the adapted model computes exactly the
  base model until it trains. Adapters and the head train.
- `lora`: LoRA (Hu et al. 2021) on every attention's `qkv` and `proj` linear layer through
  the `peft` library (imported only here), rank `rank`, alpha = rank (scale 1), B at zero
  (the identity again). LoRA's A and B and the head train.

Everything else gets `requires_grad=False`, so it stays out of the optimiser, the flat
gradient buffers (`method.optim.FlatParams` takes only trainable parameters) and the
CA-AT projection: g_c and g_a are gradients over the trainable parameters only.
"""

from __future__ import annotations

from torch import Tensor, nn

from caat_app.errors import ConfigError
from caat_app.models.registry import PEFT_MODES

LORA_TARGETS = r"(.*\.)?attn\.(qkv|proj)"
"""The linear layers LoRA adapts (peft full-matches module names): ViT's and Swin's attention."""


class Bottleneck(nn.Module):
    """x + up(GELU(down(x))), with `up` zero-initialised: the identity until it trains."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.act(self.down(x)))


class AdaptedMlp(nn.Module):
    """A block's MLP followed by its adapter (the block's own residual stays outside)."""

    def __init__(self, mlp: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.mlp = mlp
        self.adapter = adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.mlp(x))


def transformer_blocks(body: nn.Module) -> list[nn.Module]:
    """Every block with an attention and an MLP (timm's ViT `Block`, `SwinTransformerBlock`)."""
    return [
        m
        for m in body.modules()
        if isinstance(getattr(m, "attn", None), nn.Module)
        and isinstance(getattr(m, "mlp", None), nn.Module)
    ]


def _mlp_width(mlp: nn.Module) -> int:
    """The width an MLP returns: its last linear layer's output features."""
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("adapter: a transformer block's MLP has no linear layer")
    return linears[-1].out_features


def insert_adapters(body: nn.Module, reduction: int) -> int:
    """A bottleneck adapter after the MLP of every transformer block; how many went in."""
    blocks = transformer_blocks(body)
    if not blocks:
        raise ConfigError("adapter: the model has no transformer blocks to adapt")
    for block in blocks:
        mlp = block.mlp
        block.mlp = AdaptedMlp(mlp, Bottleneck(_mlp_width(mlp), reduction))
    return len(blocks)


def insert_lora(body: nn.Module, rank: int) -> nn.Module:
    """LoRA on the attention layers through `peft` (which freezes everything else)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ConfigError(
            "peft: lora needs the peft package (pip install peft); adapter needs nothing more"
        ) from None
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
    return inject_adapter_in_model(config, body)


def classifier(body: nn.Module) -> nn.Module:
    """The classification head (timm's `get_classifier`: ViT's `head`, Swin's `head.fc`)."""
    get = getattr(body, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        raise ConfigError("peft: the model has no classification head to train")
    return head


def head_prefix(body: nn.Module) -> str:
    """The head's name among the body's modules, e.g. `head` or `head.fc`."""
    head = classifier(body)
    return next(name for name, m in body.named_modules() if m is head)


def apply_peft(body: nn.Module, mode: str, *, reduction: int = 16, rank: int = 8) -> nn.Module:
    """Make `mode` of the transformer `body` trainable (and add its modules); returns the body.

    Called after the base weights are loaded: the wrapped layers' tensors move (an
    adapted block's `mlp.fc1` becomes `mlp.mlp.fc1`, LoRA's `qkv` keeps its weight
    in `qkv.base_layer`), and the added ones are in no base file.
    """
    if mode not in PEFT_MODES:
        raise ConfigError(f"peft: unknown mode {mode!r}; choose one of {', '.join(PEFT_MODES)}")
    if mode == "full":
        return body
    head = classifier(body)
    if mode == "lora":
        body = insert_lora(body, rank)
    else:
        body.requires_grad_(False)
        if mode == "adapter":
            insert_adapters(body, reduction)
    head.requires_grad_(True)
    return body


def trainable_names(model: nn.Module) -> list[str]:
    """The parameters that train, by name, in the flat buffers' order."""
    return [name for name, p in model.named_parameters() if p.requires_grad]
