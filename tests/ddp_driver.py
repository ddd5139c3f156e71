"""Run by tests/test_ddp.py under ``torchrun --nproc-per-node 2``: several ``sddhr train``
commands in one gloo process group (started once, as ``torchrun -m sddhr.cli train`` would)."""

import json
import sys

from sddhr.cli import main
from sddhr.distributed import rank_seed, session, world

if __name__ == "__main__":
    runs = json.loads(sys.argv[1])
    with session("cpu"):
        for argv in runs:
            rc = main(argv)
            if rc != 0:
                sys.exit(rc)
        w = world()
        # one write per line: the ranks share the pipe, and print() writes the text and the newline apart
        sys.stdout.write(json.dumps({"rank": w.rank, "size": w.size, "seed": rank_seed(0, 0, w.rank)}) + "\n")
        sys.stdout.flush()
