"""One `deltarank evaluate` request: the model, what to measure and on what, and how (`EvalRequest`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation.

    Attributes:
        model: The base model: `smollm2-135m`, `gemma3-270m`, a .gguf file or a Hugging Face directory; with
            `tuned`, it must be the base the run's run.json records, and None takes that one.
        data: What to measure on (see the module docstring); None only for `measure="drift"`.
        tuned: A `deltarank train` output (a LoRA adapter or a full model directory), or None for the base.
        limit: Measure the first N examples (accuracy 200, HumanEval all 164, loss 64 sequences, diversity 4
            prompts).
        execute: Run HumanEval completions (or HumanEval diversity samples) against their tests.
        timeout_s: Wall-clock limit per executed completion.
        memory_mb: Address-space limit per executed completion.
        max_new_tokens: Generated tokens per answer (accuracy: 8 for zh-sentiment, 160 for math; HumanEval 384;
            diversity 64).
        seq_len: Maximum tokens per sequence for the loss.
        output: Where to write the result JSON, or None.
        force: Replace an existing `output` (without it an existing file is refused and left untouched).
        device: Where the models run: auto (CUDA when present), cpu, cuda or cuda:N. Greedy answers and
            losses agree across devices up to float32 rounding.
        completions: A JSONL file of given HumanEval completions to score (with `execute`): no model loads.
        unsafe_no_sandbox: Without bubblewrap, run completions as plain limited processes instead of refusing.
        measure: loss, accuracy, humaneval, drift or diversity; None: the data decides.
        seed: Seed of drift's general answers and of diversity's samples (default 0).
        general_tokens: Tokens (at most) of each base-model sample in the drift set (default 128).
        general_samples: Samples per general prompt in the drift set (default 8).
        diversity_samples: Samples per prompt for diversity (default 8).
        temperature: Sampling temperature of diversity's samples (default 0.2).
        top_p: Nucleus-sampling threshold of diversity's samples (default 0.95).
    """

    MEASURES: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "humaneval", "drift", "diversity")

    model: str | None
    data: str | None
    tuned: str | None = None
    limit: int | None = None
    execute: bool = False
    timeout_s: float = 10.0
    memory_mb: int = 512
    max_new_tokens: int | None = None
    seq_len: int = 512
    output: str | None = None
    force: bool = False
    device: str = "auto"
    completions: str | None = None
    unsafe_no_sandbox: bool = False
    measure: str | None = None
    seed: int | None = None
    general_tokens: int | None = None
    general_samples: int | None = None
    diversity_samples: int | None = None
    temperature: float | None = None
    top_p: float | None = None
