"""A small transformer classifier on a chip: patch embedding + 2 attention blocks on MNIST,
trained conventionally and with S-DDHR at level 10, both evaluated at levels 4 and 10.

    python examples/transformer_mnist.py --data-dir DATA    # MNIST in DATA/mnist ($SDDHR_DATA_DIR)
    python examples/transformer_mnist.py --tiny             # the embedded 8 x 8 digits: a quick check

The patch embedding stays digital (prepare's default); every other nn.Linear, the four
projections of each nn.MultiheadAttention included, runs on the macro (sddhr.api.layer_table
prints where each layer runs). The attention products q k^T and weights @ v stay digital.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

import sddhr
from sddhr.api import layer_table
from sddhr.data import load_dataset


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class PatchTransformer(nn.Module):
    """Image -> 4 x 4 patches -> linear embedding + position -> 2 blocks -> mean -> classes."""

    def __init__(self, in_shape: tuple[int, int, int], classes: int = 10, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        c, h, w = in_shape
        self.patch = h // 4
        self.embed = nn.Linear(c * self.patch * self.patch, dim)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.blocks = nn.Sequential(Block(dim, heads), Block(dim, heads))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        patches = x.unfold(2, p, p).unfold(3, p, p)  # N, C, 4, 4, p, p
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], 16, -1)
        z = self.blocks(self.embed(patches) + self.pos)
        return self.head(self.norm(z).mean(1))


def main() -> dict[str, sddhr.ChipTable]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder holding mnist/ (default: $SDDHR_DATA_DIR)")
    ap.add_argument("--tiny", action="store_true", help="embedded digits instead of MNIST")
    ap.add_argument("--float-epochs", type=int, help="float epochs (default: 3; --tiny 15)")
    ap.add_argument("--epochs", type=int, help="S-DDHR epochs (default: 2; --tiny 1)")
    ap.add_argument("--sddhr-optimizer", choices=("sgd", "adam"), default="sgd",
                    help="S-DDHR optimiser (default sgd, the library's)")
    ap.add_argument("--sddhr-lr", type=float, default=sddhr.api.SDDHR_LR,
                    help=f"S-DDHR learning rate (default {sddhr.api.SDDHR_LR:g}, the library's)")
    ap.add_argument("--chips", type=int, default=5, help="chips per level")
    ap.add_argument("--test-subset", type=int, help="evaluate on the first N test images")
    args = ap.parse_args()
    name = "digits" if args.tiny else "mnist"
    float_epochs = args.float_epochs or (15 if args.tiny else 3)
    epochs = args.epochs or (1 if args.tiny else 2)
    train = load_dataset(name, "train", args.data_dir)
    test = load_dataset(name, "test", args.data_dir, stats_from=train, subset=args.test_subset)
    torch.manual_seed(0)
    model = sddhr.prepare(PatchTransformer(train.in_shape, train.classes))
    print(layer_table(model))
    trainer = sddhr.HardwareTrainer(model, level=10)
    trainer.train_float(train, epochs=float_epochs)
    trainer.train_ideal(train)  # the conventional model: calibrated ranges, one epoch on the ideal macro
    conventional = copy.deepcopy(model)
    trainer.train_sddhr(train, epochs=epochs, lr=args.sddhr_lr, optimizer=args.sddhr_optimizer)
    tables = {}
    for label, net in (("conventional", conventional), ("sddhr", model)):
        tables[label] = sddhr.evaluate_chips(net, test, levels=[4, 10], chips=args.chips)
        print(f"\n{label}\n{tables[label]}")
    return tables


if __name__ == "__main__":
    tables = main()
