"""The hand-written baseline: load both checkpoints whole, then `torch.linalg.svdvals` of each block delta.

Usage: python baseline_handwritten.py BASE TUNED   (each a .safetensors file or a directory holding one)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def weights_file(path: str) -> str:
    p = Path(path)
    return str(p / "model.safetensors") if p.is_dir() else str(p)


def main(base_path: str, tuned_path: str) -> None:
    base = load_file(weights_file(base_path))
    tuned = load_file(weights_file(tuned_path))
    results = {}
    for name, w in base.items():
        if w.dim() == 2 and re.search(r"layers\.\d+\.", name) and name in tuned:
            results[name] = torch.linalg.svdvals(tuned[name].float() - w.float())
    print(f"{len(results)} matrices")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
