"""Add (or replace) a pretrained model in the package's zoo (src/sddhr/zoo): the run's
checkpoint exported without optimiser state and data folder, its SHA-256 and the accuracy
its compare results measured written to the manifest.

    python examples/ship_model.py NAME RUN [RESULTS] --command "how RUN was made"

NAME: the zoo name (loaded as zoo:NAME); RUN: the run folder; RESULTS: a compare results.json
(or its folder) in which the run is the only model or is named NAME (without it: the run's
own last test accuracy, in the mode it trained in).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sddhr.zoo as zoo
from sddhr.evaluate import load_results
from sddhr.zoo.ship import export


def accuracy_of(results: dict, name: str) -> dict:
    models = {m["name"]: m for m in results["models"]}
    model = models.get(name) or (next(iter(models.values())) if len(models) == 1 else None)
    if model is None:
        raise SystemExit(f"{name} is not among the results' models {sorted(models)}")
    cfg = results["eval_config"]
    acc = {"ideal": model["ideal"], "float": model["float"],
           "chips": f"{cfg['instances']} {cfg['impl']} chips from seed {cfg['first_seed']}, "
                    + (f"the first {cfg['test_subset']} test images" if cfg.get("test_subset")
                       else "the full test set")}
    for row in results["summary"]:
        if row["model"] == model["name"]:
            acc[f"level {row['level']:g}"] = {"mean": row["mean"], "std": row["std"], "min": row["min"]}
    return acc


def own_accuracy(run: str) -> dict:
    from sddhr.train import load_checkpoint

    last = load_checkpoint(run)["history"][-1]
    return {"test": last["test_acc"], "chips": f"none: the run's own test pass after epoch {last['epoch']}, "
            "full test set"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("run")
    ap.add_argument("results", nargs="?")
    ap.add_argument("--command", required=True, help="the commands that made the run")
    args = ap.parse_args()
    file = f"{args.name}.pt"
    digest = export(args.run, zoo.ZOO_DIR / file)
    doc = json.loads(zoo.MANIFEST.read_text(encoding="utf-8"))
    entry = {"name": args.name, "file": file, "sha256": digest, "bytes": (zoo.ZOO_DIR / file).stat().st_size,
             "accuracy": accuracy_of(load_results(Path(args.results)), args.name) if args.results
             else own_accuracy(args.run), "command": args.command}
    doc["models"] = [m for m in doc["models"] if m["name"] != args.name] + [entry]
    zoo.MANIFEST.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"zoo:{args.name}: {entry['bytes']} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
