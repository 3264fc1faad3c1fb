"""Functional rank of a run (`deltarank.evaluation.functional_rank`, as a study measures it) on its held-out set.

    python benchmarks/functional_rank.py RUN [--base smollm2-135m] [--data builtin:code:test] [--sequences 32]
        [--general DIR/base/<key>/general_text.jsonl]

RUN is a `deltarank train` output with a ΔW: a full fine-tune or a PEFT adapter (for example `runs/reproduce/full`
or `runs/reproduce/lora`). With --general (a study's forgetting set) the drift share is measured too. Prints the
learning (and drift) share of every k with its 95% interval, and k₉₀, as a Markdown table. A study measures the
same with `evaluate: {functional_rank: true}`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--data", default="builtin:code:test")
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--general", type=Path, default=None, help="a study's general_text.jsonl: drift too")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from deltarank.evaluation.drift import read_general_text
    from deltarank.evaluation.functional_rank import run_functional_rank
    from deltarank.evaluation.loss import held_out_examples
    from deltarank.evaluation.models import EvalModels
    from deltarank.study.measure.functional_rank import study_measure
    from deltarank.train.models import load_tokenizer, resolve_model

    started = time.perf_counter()
    source = resolve_model(args.base)
    tokenizer = load_tokenizer(source)
    examples, _ = held_out_examples(tokenizer, args.data, args.seq_len, args.sequences)
    general = None if args.general is None else read_general_text(args.general)
    measure = study_measure(tokenizer, examples, general)
    found = run_functional_rank(EvalModels(source, args.device), Path(args.run), measure)
    print(f"{args.run}: {found['matrices']} matrices, {len(examples)} held-out sequences of {args.data}")
    names = [n for n in ("learning", "drift") if n in found]
    for name in names:
        print(f"{name}: base {found[name]['base']:.4f}, tuned {found[name]['tuned']:.4f}")
    print("\n| k | " + " | ".join(f"{n} value | {n} share (95%)" for n in names) + " |")
    print("|---:|" + "---:|---:|" * len(names))
    for index, k in enumerate(found["ks"]):
        cells = [_cells(found[name], index) for name in names]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(f"\nk_90 = {found['k90']} (≤ {found['k90_upper']}) ({time.perf_counter() - started:.0f} s)")


def _cells(measure: dict[str, Any], index: int) -> str:
    """`value | share (low–high)` of one k."""
    value, share, interval = (measure[key][index] for key in ("values", "share", "share_ci95"))
    text = "–" if share is None else f"{share:.1%}"
    if interval is not None:
        text += f" ({interval[0]:.1%}–{interval[1]:.1%})"
    return f"{value:.4f} | {text}"


if __name__ == "__main__":
    main()
