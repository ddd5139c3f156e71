"""Your own CNN on a chip: prepare, train float, S-DDHR at level 6, evaluate 5 chips (docs/API.md).

    python examples/own_cnn.py --data-dir DATA    # MNIST in DATA/mnist (default: $SDDHR_DATA_DIR)
    python examples/own_cnn.py --tiny             # the embedded 8 x 8 digits: a check in seconds
"""
import argparse

from torch import nn

import sddhr
from sddhr.data import load_dataset

ap = argparse.ArgumentParser()
ap.add_argument("--data-dir", help="folder holding mnist/ (default: $SDDHR_DATA_DIR)")
ap.add_argument("--tiny", action="store_true", help="embedded digits instead of MNIST")
args = ap.parse_args()
name, epochs = ("digits", 4) if args.tiny else ("mnist", 2)
train = load_dataset(name, "train", args.data_dir)
test = load_dataset(name, "test", args.data_dir, stats_from=train)
side = train.in_shape[1] // 4  # two 2x2 poolings
net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Flatten(), nn.Linear(32 * side * side, 10))
model = sddhr.prepare(net)  # every Conv2d / Linear on the macro except the first
trainer = sddhr.HardwareTrainer(model, level=6)
trainer.train_float(train, epochs=epochs)
trainer.train_sddhr(train, epochs=epochs)  # calibrated ranges, one ideal epoch, then S-DDHR at level 6
table = sddhr.evaluate_chips(model, test, levels=[6], chips=5)
print(table)
