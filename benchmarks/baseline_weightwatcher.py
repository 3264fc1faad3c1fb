"""WeightWatcher 0.7.7's delta analysis: `WeightWatcher(model=tuned, base_model=base).analyze()`.

Runs in its own environment (benchmarks/.venv-ww; WeightWatcher is not a deltarank dependency).
Usage: python baseline_weightwatcher.py BASE_DIR TUNED_DIR   (Hugging Face directories)
"""

from __future__ import annotations

import logging
import sys

import weightwatcher as ww
from transformers import AutoModelForCausalLM


def main(base_dir: str, tuned_dir: str) -> None:
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    tuned = AutoModelForCausalLM.from_pretrained(tuned_dir)
    details = ww.WeightWatcher(model=tuned, base_model=base).analyze()
    print(f"{len(details)} layers")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
