"""`builtin:self-samples`: the run's base model's own samples, a training set on which fine-tuning learns nothing
in expectation (issue #25, the self-sample null).

Each sequence is `[s, x_1, ..., x_{L-1}]` (L = the run's `seq_len`): `s` is the tokenizer's BOS token (the token
`generate` starts from without a prompt; its EOS when it has no BOS) and every `x_t` is drawn from the base
model's full next-token distribution, softmax(logits) at temperature 1: no top-k, no top-p, no repetition
penalty, no other logits processor (`deltarank.train.untruncated_sampling`, the sampler the forgetting set
uses too: a KV-cache loop of its own, not `generate`, whose `generation_config` may carry any of those
settings). An EOS drawn mid-sequence is kept and sampling goes on, so every sequence is an exact draw
of the base's joint distribution of L - 1 tokens after `s`, and the training loss's gradient at the base has
expectation zero over the draws (E_{x~p}[∇ log p(x)] = ∇ Σ_x p(x) = 0): what such a run changes is optimizer
and mini-batch noise at the same steps and learning rate. (Packing decoded text into blocks, as text data sets
are, would join draws at boundaries the model never conditioned on, and re-tokenizing text need not give the
sampled tokens back; the sampled ids are trained on as they are.) The null is exact for methods that start at
the base model (full, LoRA and the other weight methods, whose adapters start at zero or the identity); a
virtual-token method starts elsewhere and is warned about.

No prompts: from the start token alone the samples are the model's unconditional distribution, the closest to
the definition, and no prompt list decides what the noise covers.

Sizes: max_steps × batch_size × grad_accum × world size sequences, so that no step sees a sequence twice
(`max_examples` caps them; with `epochs` it is the number drawn). They are drawn in batches of
GENERATION_BATCH_FACTOR × batch_size sequences (a KV cache for that many sequences is far smaller than the
training activations of batch_size), on the training device, with a private `torch.Generator` seeded by the
run's seed (the global generator, which initialises LoRA, is left as it was): the same seed on the same device
type gives the same set.

The set is written to RUN/self_samples.jsonl (`write_self_samples`: one line per sequence, its `input_ids` and
their decoding with special tokens), and run.json's `data.train.sampling` says how it was drawn. `--resume`
trains on the file rather than sampling again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.errors import DeltarankError, InputError
from deltarank.io.jsonl import iter_jsonl
from deltarank.io.run_directory import SELF_SAMPLES
from deltarank.train.builtin_data import PREFIX, SELF_SAMPLES_DATASET, is_builtin, parse_builtin
from deltarank.train.untruncated_sampling import TEMPERATURE, TOP_P, draw_untruncated

if TYPE_CHECKING:  # deltarank.train.data imports torch: TrainConfig's checks import this module
    from deltarank.train.data import TokenizedDataset

logger = logging.getLogger(__name__)

NAME = PREFIX + SELF_SAMPLES_DATASET
FORMAT = "sampled token ids"  # run.json's data.train.format for this set
GENERATION_BATCH_FACTOR = 8  # sequences drawn together: this many times the training micro-batch


def is_self_samples(spec: str | None) -> bool:
    """True for `builtin:self-samples` (with any suffix: a bad one is `parse_builtin`'s error)."""
    if spec is None or not is_builtin(spec):
        return False
    return spec[len(PREFIX) :].split(":")[0] == SELF_SAMPLES_DATASET


def check_config(config: Any) -> None:
    """Refuse settings that leave the self-sample set undefined (`TrainConfig` runs this when it is built).

    Raises:
        DeltarankError: the set as eval data, a split of it, or neither max_steps nor max_examples to size it.
    """
    if is_self_samples(config.eval_data):
        raise DeltarankError(
            f"{NAME} is training data sampled from the run's own model, not an evaluation set (eval_data)"
        )
    if not is_self_samples(config.data):
        return
    parse_builtin(config.data)  # builtin:self-samples:test has no meaning
    if config.max_steps is None and config.max_examples is None:
        raise DeltarankError(
            f"{NAME} draws max_steps × batch_size × grad_accum sequences: give max_steps (or max_examples)"
        )


@dataclass(frozen=True)
class SamplingPlan:
    """What to draw: `count` sequences of `length` tokens after `start_token`, with `seed`, `batch` at a time."""

    count: int
    length: int
    start_token: int
    seed: int
    batch: int

    @classmethod
    def of(cls, config: Any, tokenizer: Any, needed: int | None) -> SamplingPlan:
        """The plan of a resolved `TrainConfig` (`needed`: the sequences its max_steps consume, None for epochs).

        Raises:
            DeltarankError: no max_steps or max_examples, or a tokenizer with neither BOS nor EOS.
        """
        check_config(config)
        caps = [n for n in (needed, config.max_examples) if n is not None]
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise DeltarankError(f"{NAME}: the tokenizer has neither a BOS nor an EOS token to start from")
        family = _method_family(config.method)
        if family == "prompt":
            logger.warning(
                "%s: method %s starts from virtual tokens, not from the base model, so its self-sample run is "
                "not a pure noise null",
                NAME,
                config.method,
            )
        count = min(caps)
        return cls(
            count,
            config.seq_len,
            int(start),
            config.seed,
            min(count, GENERATION_BATCH_FACTOR * config.batch_size),
        )

    def check_model(self, model: Any) -> None:
        """Refuse sequences longer than the model's positions.

        Raises:
            DeltarankError: seq_len above `max_position_embeddings`.
        """
        limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and self.length > limit:
            raise DeltarankError(
                f"{NAME}: seq_len {self.length} exceeds the model's {limit} positions; lower --seq-len"
            )

    def record(self, tokenizer: Any, device: str, seconds: float | None) -> dict[str, Any]:
        """run.json's `data.train.sampling` (`seconds`: None when the set was read back on `--resume`)."""
        return {
            "source": "the run's base model (before any adapter is added)",
            "start_token": self.start_token,
            "start_text": tokenizer.convert_ids_to_tokens(self.start_token),
            "temperature": TEMPERATURE,
            "top_k": None,
            "top_p": TOP_P,
            "processors": [],
            "eos": "kept; sampling continues",
            "sequences": self.count,
            "tokens_per_sequence": self.length,
            "seed": self.seed,
            "generation_batch": self.batch,
            "device": device,
            "seconds": seconds,
            "file": SELF_SAMPLES,
            "read_back": seconds is None,
        }


@dataclass(frozen=True)
class SelfSamples:
    """The drawn set: its sequences (token ids, the start token first) and how they were drawn."""

    sequences: list[list[int]]
    sampling: dict[str, Any]

    @property
    def dataset(self) -> TokenizedDataset:
        """The training set: every token a label (the collators never train the first)."""
        from deltarank.train.data import TokenizedDataset

        return TokenizedDataset([(list(s), list(s)) for s in self.sequences])

    def summary(self) -> dict[str, Any]:
        """run.json's `data.train`: the data summary with the sampling record."""
        from deltarank.train.data import DataSummary

        tokens = sum(len(s) for s in self.sequences)
        summary = DataSummary(NAME, FORMAT, len(self.sequences), len(self.sequences), tokens, tokens, 0)
        return {**summary.to_dict(), "sampling": self.sampling}


def self_samples(
    plan: SamplingPlan, model: Any, tokenizer: Any, device: Any, saved: Path | None = None
) -> SelfSamples:
    """The run's self-sample set: read back from `saved` (a resumed run's file) or drawn from `model`.

    Args:
        plan: What to draw.
        model: The base model, before any adapter wraps it (moved to `device` unless it is quantized).
        tokenizer: Its tokenizer (for the record).
        device: The training device.
        saved: RUN/self_samples.jsonl of the run being resumed, or None.

    Raises:
        DeltarankError: seq_len beyond the model's positions; a saved file that does not match the plan.
    """
    plan.check_model(model)
    if saved is not None and saved.is_file():
        sequences = read_self_samples(saved)
        if len(sequences) != plan.count or any(len(s) != plan.length for s in sequences):
            raise InputError(
                saved, f"does not hold the {plan.count} sequences of {plan.length} tokens to resume"
            )
        return SelfSamples(sequences, plan.record(tokenizer, str(device), None))
    if getattr(model, "hf_quantizer", None) is None:
        model.to(device)
    started = time.perf_counter()
    drawn = sample_sequences(model, plan.start_token, plan.count, plan.length, plan.seed, plan.batch)
    seconds = time.perf_counter() - started
    logger.info("%s: drew %d sequences of %d tokens in %.1f s", NAME, plan.count, plan.length, seconds)
    return SelfSamples(drawn, plan.record(tokenizer, str(_device_of(model)), seconds))


def sample_sequences(
    model: Any, start_token: int, count: int, length: int, seed: int, batch: int
) -> list[list[int]]:
    """`count` sequences of `length` tokens: `start_token`, then draws from softmax(logits) at temperature 1
    (`deltarank.train.untruncated_sampling.draw_untruncated`, `batch` sequences at a time).

    Nothing truncates or reshapes the distribution, and an EOS is drawn like any token. The draws use a private
    generator seeded with `seed` on the model's device.
    """
    import torch

    device = _device_of(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    sequences: list[list[int]] = []
    for first in range(0, count, batch):
        rows = min(batch, count - first)
        start = torch.full((rows, 1), start_token, dtype=torch.long, device=device)  # (B, 1)
        sequences += draw_untruncated(model, start, length - 1, generator).tolist()
    return sequences


def write_self_samples(path: Path, samples: SelfSamples, tokenizer: Any) -> None:
    """Write RUN/self_samples.jsonl: one line per sequence, `{"index", "input_ids", "decoded"}` (atomically)."""
    from deltarank.io.atomic import write_jsonl

    write_jsonl(
        path,
        [
            {"index": i, "input_ids": ids, "decoded": tokenizer.decode(ids, skip_special_tokens=False)}
            for i, ids in enumerate(samples.sequences)
        ],
    )


def read_self_samples(path: Path) -> list[list[int]]:
    """The token ids `write_self_samples` wrote, in order.

    Raises:
        InputError: an unreadable file, or a line that is not a JSON object with a list of token ids.
    """
    sequences = []
    for number, record in iter_jsonl(path, "the self-sample set"):
        ids = record.get("input_ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) and i >= 0 for i in ids):
            raise InputError(path, f"line {number}: no input_ids (a list of token ids)")
        sequences.append(ids)
    return sequences


def _device_of(model: Any) -> Any:
    return next(model.parameters()).device


def _method_family(method: str) -> str | None:
    from deltarank.io.training_methods import REGISTRY

    entry = REGISTRY.get(method)
    return entry.family if entry is not None else None
