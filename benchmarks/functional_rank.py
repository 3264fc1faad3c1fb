"""Functional rank of a full fine-tune (`deltarank.evaluation.functional_rank`) on its held-out set.

    python benchmarks/functional_rank.py RUN [--base smollm2-135m] [--data builtin:code:test] [--sequences 32]

RUN is a `deltarank train` output of method full (for example `runs/reproduce/full`). Prints recovered(k) for
every k and k₉₀ as a Markdown table.
"""

from __future__ import annotations

import argparse
import time

from deltarank.evaluation.functional_rank import functional_rank
from deltarank.evaluation.models import ready_for_evaluation
from deltarank.train.data import build_dataset
from deltarank.train.models import load_model, load_tokenizer, load_trained, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--data", default="builtin:code:test")
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    import torch

    started = time.perf_counter()
    source = resolve_model(args.base)
    tokenizer = load_tokenizer(source)
    dataset, _ = build_dataset(args.data, tokenizer, args.seq_len, max_sequences=args.sequences)
    examples = dataset.examples[: args.sequences]
    cpu = torch.device("cpu")
    base = ready_for_evaluation(load_model(source), cpu)
    tuned = ready_for_evaluation(load_trained(source, args.run), cpu)
    found = functional_rank(base, tuned, examples, tokenizer.pad_token_id or 0)
    print(f"{args.run}: {found['matrices']} matrices, {len(examples)} held-out sequences of {args.data}")
    print(
        f"loss tuned {found['loss_tuned']:.4f}, without the linear ΔW {found['loss_without_linear_deltas']:.4f}"
    )
    print("\n| k | held-out loss | recovered |\n|---:|---:|---:|")
    for k, loss, share in zip(found["ks"], found["losses"], found["recovered"], strict=True):
        print(f"| {k} | {loss:.4f} | {'–' if share is None else f'{share:.1%}'} |")
    print(f"\nk_90 = {found['k_90']} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
