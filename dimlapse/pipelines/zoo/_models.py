"""The model zoo: mlp, cnn, resnet, transformer, vit, gpt2-tiny, built from a :class:`DataSpec`.

Small, readable definitions (nanoGPT-style); all layers that dimlapse captures by default are
plain ``nn.Linear`` / ``nn.ConvNd`` / ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
modules with stable qualified names (``fc1``, ``blocks.0.self_attn``, ...).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._data import DataSpec
from ._recipes import MODELS


class MLP(nn.Module):
    """The study's MLP: in -> 256 -> 128 -> classes with ReLU (784-256-128-10 on 28x28 images)."""

    def __init__(self, in_features: int, n_classes: int, *, hidden: tuple[int, ...] = (256, 128)):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (batch, in_features)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    """Three conv layers (1-D for sequences, 2-D for images), global average pool, linear."""

    def __init__(self, in_channels: int, n_classes: int, *, dim: int, width: int = 32):
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        self.conv1 = conv(in_channels, width, 5, padding=2)
        self.conv2 = conv(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = conv(2 * width, 2 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in (self.conv1, self.conv2, self.conv3):
            x = torch.relu(c(x))  # (batch, channels, *spatial)
        return self.fc(x.flatten(2).mean(-1))  # pool over positions -> (batch, channels)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3-wide convs with BatchNorm and a skip."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, dim: int):
        super().__init__()
        conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dim == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = bn(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                conv(c_in, c_out, 1, stride=stride, bias=False), bn(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A small residual net: stem + ``blocks`` stages of BasicBlocks (widths w, 2w, 4w, ...).

    ``blocks=(2, 2, 2, 2)`` with ``width=64`` and a 2-D input is the ResNet-18 layout (CIFAR
    stem: one 3x3 conv, no max-pool).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        *,
        dim: int,
        width: int = 16,
        blocks: tuple[int, ...] = (1, 1, 1),
    ):
        super().__init__()
        conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dim == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.stem = nn.Sequential(conv(in_channels, width, 3, padding=1, bias=False), bn(width))
        layers, c = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                layers.append(BasicBlock(c, c_out, stride=2 if (i > 0 and j == 0) else 1, dim=dim))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(torch.relu(self.stem(x)))  # (batch, channels, *spatial)
        return self.fc(x.flatten(2).mean(-1))


def _encoder(d: int, heads: int, depth: int, ff: int) -> nn.ModuleList:
    # Pre-LN blocks, no dropout: capture forwards are deterministic and training is too.
    return nn.ModuleList(
        nn.TransformerEncoderLayer(
            d, heads, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        for _ in range(depth)
    )


class Transformer(nn.Module):
    """A small encoder for token sequences (or 1-D signals, one token per position).

    Prediction from the last position (the '=' token for modular addition).
    """

    def __init__(
        self,
        spec: DataSpec,
        *,
        d: int = 128,
        heads: int = 4,
        depth: int = 1,
        ff: int = 512,
    ):
        super().__init__()
        if spec.kind == "tokens":
            if spec.vocab_size is None:
                raise ValueError(f"Token data {spec.name!r} needs a vocab_size in its DataSpec")
            self.embed: nn.Module = nn.Embedding(spec.vocab_size, d)
            length = spec.input_shape[0]
        else:  # sequence (n, channels, length): one token per position
            self.embed = nn.Linear(spec.input_shape[0], d)
            length = spec.input_shape[1]
        self.pos = nn.Parameter(torch.randn(1, length, d) * 0.02)
        self.blocks = _encoder(d, heads, depth, ff)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, spec.n_classes)
        self.tokens_input = spec.kind == "tokens"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tokens_input:
            x = x.transpose(1, 2)  # (batch, length, channels)
        h = self.embed(x) + self.pos  # (batch, length, d)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, -1]))


class ViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al. 2021): conv patch embedding, class token,
    learned positions, pre-LN encoder blocks. 2-D images, or 1-D signals with 1-D patches."""

    def __init__(
        self,
        spec: DataSpec,
        *,
        patch: int = 4,
        d: int = 64,
        heads: int = 4,
        depth: int = 4,
        ff: int = 128,
    ):
        super().__init__()
        c, *spatial = spec.input_shape
        if any(s % patch for s in spatial):
            raise ValueError(f"Expected input sides {spatial} to be multiples of patch={patch}")
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        self.patch_embed = conv(c, d, patch, stride=patch)
        n_patches = math.prod(s // patch for s in spatial)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, d) * 0.02)
        self.blocks = _encoder(d, heads, depth, ff)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, patches, d)
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, 0]))


class GPT2Tiny(nn.Module):
    """A 2-layer GPT-2 (Radford et al. 2019) built from a ``transformers.GPT2Config`` on the spot
    (no download), returning next-token logits ``(batch, length, vocab)``.

    No dropout, like the rest of the zoo. The input and output embeddings are tied, so the
    run stores the matrix once (``lm.transformer.wte.weight``).
    """

    def __init__(self, spec: DataSpec, *, d: int = 64, heads: int = 4, depth: int = 2):
        super().__init__()
        try:
            from transformers import GPT2Config, GPT2LMHeadModel
        except ImportError as e:  # an optional dependency: say which extra brings it
            raise ImportError(
                "Model 'gpt2-tiny' needs transformers: pip install 'dimlapse[recipes]'"
            ) from e
        config = GPT2Config(
            vocab_size=spec.vocab_size or spec.n_classes,
            n_positions=spec.input_shape[0],
            n_embd=d,
            n_layer=depth,
            n_head=heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,  # bytes: no special tokens
            eos_token_id=None,
        )
        self.lm = GPT2LMHeadModel(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=x).logits  # (batch, length, vocab)


def build_model(name: str, spec: DataSpec) -> nn.Module:
    """Build model ``name`` for data described by ``spec``.

    Parameters
    ----------
    name
        One of 'mlp', 'cnn', 'resnet', 'transformer', 'vit', 'gpt2-tiny'.
    spec
        The dataset's :class:`DataSpec` (input shape, classes, kind).

    Examples
    --------
    >>> from dimlapse.pipelines import DataSpec, build_model
    >>> m = build_model("mlp", DataSpec("digits", "image", (1, 28, 28), 10))
    >>> [tuple(p.shape) for n, p in m.named_parameters() if n.endswith("weight")]
    [(256, 784), (128, 256), (10, 128)]
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; expected one of: {', '.join(MODELS)}")
    kind = spec.kind
    if (name == "gpt2-tiny") != (kind == "text"):
        raise ValueError(
            f"Model {name!r} and data {spec.name!r} ({kind}) do not fit: 'gpt2-tiny' is a "
            "language model for text data ('stdlib'), the other models classify"
        )
    if name == "gpt2-tiny":
        return GPT2Tiny(spec)
    if name == "mlp":
        if kind == "tokens":
            raise ValueError("Model 'mlp' needs real-valued inputs; token data suits 'transformer'")
        return MLP(math.prod(spec.input_shape), spec.n_classes)
    if name in ("cnn", "resnet"):
        if kind == "tokens":
            raise ValueError(f"Model {name!r} needs sequences or images; tokens suit 'transformer'")
        dim = len(spec.input_shape) - 1
        if name == "cnn":
            return CNN(spec.input_shape[0], spec.n_classes, dim=dim)
        return ResNet(spec.input_shape[0], spec.n_classes, dim=dim)
    if name == "transformer":
        if kind == "image":
            raise ValueError("Model 'transformer' takes tokens or sequences; images suit 'vit'")
        return Transformer(spec)
    if kind == "tokens":
        raise ValueError("Model 'vit' takes images or sequences; tokens suit 'transformer'")
    return ViT(spec)
