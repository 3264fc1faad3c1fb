"""Data replay against forgetting: general data mixed into a run's domain training data (`replay_data`,
`replay_fraction`), as ChatHome and XuanYuan 2.0 mix general data into domain training to forget less.

The rule, added rather than replaced: the domain set is what the run trains on without replay, its N sequences
after `max_examples` (and, with `max_steps`, after the cap at the sequences the steps consume). To it are added

    R = round(N · f / (1 − f))        (f = replay_fraction, rounded half up)

replay sequences, so that they are a fraction R / (N + R) ≈ f of the mixed set. The domain sequences stay the
same ones at every f, which is the comparison the surveys make ("the same domain data, plus general data"); a
rule that replaced domain sequences would mix less domain data into every higher f, and the study could not
tell forgetting less from learning less. The fraction counts sequences, as `max_examples` does; run.json gives
their tokens per source too (a packed text block is `seq_len` tokens, an instruction example often fewer).

The replay sequences are the first R of `replay_data`, tokenised and packed exactly as training data
(`deltarank.train.data.build_dataset` with the run's tokenizer and seq_len), so a larger f adds to a smaller
f's replay set (0.1's is a prefix of 0.3's). `builtin:self-samples` replays the base model's own samples (R
sequences of seq_len tokens drawn as `deltarank.train.builtin_self_samples` draws its null, with the run's seed,
written to RUN/replay_samples.jsonl and read back on `--resume`). Fewer than R replay sequences is an error
(cycling would replay some sequences more often than others, and f would no longer say what was trained).

The mixed set is shuffled with the run's seed (`random.Random(seed)`), and what is trained on is recorded
exactly (run.json `data.replay.trained`):

- `epochs`: the Trainer passes over the mixed set `epochs` times (shuffling it again, with its own seed, each
  pass): the mixed set's counts times the epochs when they are a whole number, null otherwise (which sequences
  a part-pass holds is the Trainer's draw).
- `max_steps`: the run consumes S = max_steps × batch_size × grad_accum × world size sequences. The training
  set is made exactly S long: passes over the mixed set, each in a new order from the same seeded generator,
  cut at S, so that the Trainer's one epoch is the run and the counts are exact. The step budget is fixed, so
  replay takes its share of it and fewer domain sequences are trained on; to hold the domain data fixed give
  `max_examples` (a study's `data_size`) and `epochs`, as the `replay` preset does.

replay_fraction 0 (or unset) is no replay: the data set, its order and the batches are those of a run without
these keys (`TrainConfig.resolved()` clears both, so such a run is recorded and named as one without replay).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.errors import DeltarankError, InputError
from deltarank.train.builtin_data import is_builtin, parse_builtin
from deltarank.train.builtin_self_samples import is_self_samples

if TYPE_CHECKING:  # deltarank.train.data imports torch: TrainConfig's checks import this module
    from deltarank.train.data import TokenizedDataset

REPLAY_SAMPLES = "replay_samples.jsonl"  # RUN/ file of a builtin:self-samples replay set
RULE = "added: round(N·f/(1−f)) replay sequences to the N domain sequences, shuffled with the run's seed"
DOMAIN, REPLAY = "domain", "replay"


def check_replay(config: Any) -> None:
    """Refuse replay settings that leave the mixed set undefined (`TrainConfig` runs this when it is built).

    Raises:
        DeltarankError: a fraction outside [0, 1), replay_data without replay_fraction or the reverse, replay of
            the training data itself, of a self-sample run or of a held-out split.
    """
    data, fraction = config.replay_data, config.replay_fraction
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise DeltarankError(f"replay_fraction must be in [0, 1), got {fraction}")
    if fraction and data is None:
        raise DeltarankError(f"replay_fraction {fraction} needs replay_data (the general data mixed in)")
    if data is not None and fraction is None:
        raise DeltarankError(
            "replay_data needs replay_fraction (the share of training sequences drawn from it; 0: none)"
        )
    if data is None or not fraction:
        return
    if data == config.data:
        raise DeltarankError(f"replay_data is the training data itself ({data}); replay mixes in other data")
    if is_self_samples(config.data):
        raise DeltarankError(
            "replay_data: a builtin:self-samples run is the self-sample null; mix nothing in"
        )
    if is_builtin(data) and parse_builtin(data).split == "test":
        raise DeltarankError(f"replay_data {data} is a held-out split; replay trains on it")


def replay_count(domain: int, fraction: float | None) -> int:
    """R = round(N·f/(1−f)), rounded half up: the replay sequences added to `domain` ones (0 without replay)."""
    if not fraction:
        return 0
    return math.floor(domain * fraction / (1.0 - fraction) + 0.5)


@dataclass(frozen=True)
class Mixed:
    """A training set with the source of each sequence (`DOMAIN` or `REPLAY`), in training order."""

    examples: list[tuple[list[int], list[int]]]
    sources: list[str]

    def counts(self) -> dict[str, dict[str, int]]:
        """Sequences, tokens and trained tokens (labels not ignored) per source."""
        from deltarank.train.formats import IGNORE_INDEX

        found = {s: {"sequences": 0, "tokens": 0, "trained_tokens": 0} for s in (DOMAIN, REPLAY)}
        for (ids, labels), source in zip(self.examples, self.sources, strict=True):
            found[source]["sequences"] += 1
            found[source]["tokens"] += len(ids)
            found[source]["trained_tokens"] += sum(1 for x in labels if x != IGNORE_INDEX)
        return found


def mix(
    domain: list[tuple[list[int], list[int]]], replay: list[tuple[list[int], list[int]]], seed: int
) -> Mixed:
    """Domain and replay sequences together, shuffled with `random.Random(seed)`."""
    return _passes(domain, replay, random.Random(seed), len(domain) + len(replay))


def stream(
    domain: list[tuple[list[int], list[int]]],
    replay: list[tuple[list[int], list[int]]],
    seed: int,
    total: int,
) -> Mixed:
    """`total` sequences: passes over the mixed set, each in a new order from one `random.Random(seed)`; the
    first pass is `mix`'s order."""
    return _passes(domain, replay, random.Random(seed), total)


def _passes(
    domain: list[tuple[list[int], list[int]]],
    replay: list[tuple[list[int], list[int]]],
    rng: random.Random,
    total: int,
) -> Mixed:
    pool = [(e, DOMAIN) for e in domain] + [(e, REPLAY) for e in replay]
    chosen: list[tuple[tuple[list[int], list[int]], str]] = []
    while len(chosen) < total:
        order = list(pool)
        rng.shuffle(order)
        chosen += order[: total - len(chosen)]
    return Mixed([e for e, _ in chosen], [s for _, s in chosen])


@dataclass(frozen=True)
class Replay:
    """A run's mixed training set and its run.json record (`data.replay`)."""

    dataset: TokenizedDataset
    record: dict[str, Any]
    samples: Any = None  # the drawn SelfSamples of a builtin:self-samples replay, written with `write`

    def write(self, output_dir: Path, tokenizer: Any) -> None:
        """Write RUN/replay_samples.jsonl when the replay set was drawn from the model."""
        if self.samples is not None:
            from deltarank.train.builtin_self_samples import write_self_samples

            write_self_samples(output_dir / REPLAY_SAMPLES, self.samples, tokenizer)


def mix_replay(
    config: Any,
    domain: TokenizedDataset,
    tokenizer: Any,
    base: Any,
    device: Any,
    needed: int | None,
    saved: Path | None = None,
) -> Replay | None:
    """The run's training set with its replay sequences mixed in, or None without replay.

    Args:
        config: The resolved TrainConfig.
        domain: The domain training set (after max_examples and the max_steps cap).
        tokenizer: The run's tokenizer (replay data is tokenised and packed with it, at config.seq_len).
        base: The base model, before any adapter (a builtin:self-samples replay is drawn from it).
        device: The training device.
        needed: The sequences the run's max_steps consume (`arguments.sequences_needed`), None for epochs.
        saved: RUN/replay_samples.jsonl of the run being resumed, or None.

    Raises:
        InputError: replay data with fewer than R sequences.
    """
    if not config.replay_fraction:
        return None
    wanted = replay_count(len(domain), config.replay_fraction)
    replay, summary, samples = _replay_set(config, len(domain), wanted, tokenizer, base, device, saved)
    if needed is not None:
        mixed = stream(domain.examples, replay, config.seed, needed)
        trained: dict[str, Any] | None = {**mixed.counts(), "passes": needed / (len(domain) + wanted)}
        whole = mix(domain.examples, replay, config.seed)
    else:
        mixed = whole = mix(domain.examples, replay, config.seed)
        trained = _epoch_counts(whole, float(config.epochs or 1.0))
    from deltarank.train.data import TokenizedDataset

    record = {
        "data": config.replay_data,
        "fraction": config.replay_fraction,
        "rule": RULE,
        "seed": config.seed,
        "set": {**whole.counts(), "replay_share": wanted / (len(domain) + wanted)},
        "trained": trained,
        "summary": summary,
    }
    return Replay(TokenizedDataset(mixed.examples), record, samples)


def _epoch_counts(mixed: Mixed, epochs: float) -> dict[str, Any] | None:
    """What `epochs` passes over the mixed set train on: exact for whole passes, else None."""
    if epochs != int(epochs):
        return None
    counts = mixed.counts()
    passes = int(epochs)
    return {**{s: {k: v * passes for k, v in c.items()} for s, c in counts.items()}, "passes": float(passes)}


def _replay_set(
    config: Any, domain: int, wanted: int, tokenizer: Any, base: Any, device: Any, saved: Path | None
) -> tuple[list[tuple[list[int], list[int]]], dict[str, Any], Any]:
    """The first `wanted` replay sequences (for `domain` domain ones), their data summary and (self-samples) the
    drawn set."""
    spec = str(config.replay_data)
    if wanted == 0:
        return [], {"spec": spec, "sequences": 0}, None
    if is_self_samples(spec):
        return _drawn_replay(config, wanted, tokenizer, base, device, saved)
    from deltarank.train.data import build_dataset

    dataset, summary = build_dataset(spec, tokenizer, config.seq_len, wanted)
    if len(dataset) < wanted:
        raise InputError(
            spec,
            f"replay_data holds {len(dataset)} sequences of seq_len {config.seq_len}; replay_fraction "
            f"{config.replay_fraction} of {domain} domain sequences needs {wanted}: lower replay_fraction or "
            "data_size",
        )
    return dataset.examples[:wanted], {**summary.to_dict(), "sequences_used": wanted}, None


def _drawn_replay(
    config: Any, wanted: int, tokenizer: Any, base: Any, device: Any, saved: Path | None
) -> tuple[list[tuple[list[int], list[int]]], dict[str, Any], Any]:
    """`wanted` sequences of seq_len tokens drawn from the base model (or read back from `saved`)."""
    from deltarank.train.builtin_self_samples import (
        GENERATION_BATCH_FACTOR,
        SamplingPlan,
        self_samples,
    )

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise DeltarankError(
            "replay_data builtin:self-samples: the tokenizer has neither a BOS nor an EOS token"
        )
    batch = min(wanted, GENERATION_BATCH_FACTOR * config.batch_size)
    plan = SamplingPlan(wanted, config.seq_len, int(start), config.seed, batch)
    samples = self_samples(plan, base, tokenizer, device, saved)
    samples = type(samples)(samples.sequences, {**samples.sampling, "file": REPLAY_SAMPLES})
    return samples.dataset.examples, samples.summary(), samples
