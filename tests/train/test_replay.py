"""Data replay (`deltarank.train.replay`): how many replay sequences are mixed in, in which order, what a run
trains on and records, and the one-line errors of bad settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from deltarank.cli import main
from deltarank.errors import DeltarankError, InputError
from deltarank.train.config import TrainConfig
from deltarank.train.data import TokenizedDataset, build_dataset
from deltarank.train.replay import REPLAY, REPLAY_SAMPLES, mix_replay, replay_count, stream
from deltarank.train.trainer import run_training
from tests.train.conftest import train_tokenizer, write_jsonl
from tests.train.tiny_runs import KillAfterStep, Killed, losses, tiny_config

SEQ_LEN = 64
DOMAIN = 20  # domain sequences of the small case


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer()


@pytest.fixture
def replay_file(tmp_path: Path) -> Path:
    """Forty short general texts: packed into many 64-token blocks."""
    texts = [f"General text number {i}: the quick brown fox jumps over the lazy dog." for i in range(40)]
    return write_jsonl(tmp_path / "general.jsonl", [{"text": t} for t in texts])


def domain_set(tokenizer, n: int = DOMAIN) -> TokenizedDataset:  # type: ignore[no-untyped-def]
    """`n` distinct one-sequence examples (ids made unique by their first token after BOS)."""
    return TokenizedDataset([([0, 100 + i, 5], [-100, 100 + i, 5]) for i in range(n)])


def config(data: str, replay: str | None, fraction: float | None, **extra: object) -> TrainConfig:
    values: dict[str, object] = {"model": "m", "data": data, "method": "full", "output_dir": "o"}
    values.update(seq_len=SEQ_LEN, seed=0, replay_data=replay, replay_fraction=fraction)
    values.update(extra)
    return TrainConfig(**values).resolved()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain", "fraction", "replay"),
    [(20, 0.1, 2), (20, 0.3, 9), (128, 0.1, 14), (128, 0.3, 55), (2, 0.2, 1), (20, 0.0, 0), (20, None, 0)],
)
def test_replay_count_makes_replay_the_fraction_of_the_mixed_set(
    domain: int, fraction: float, replay: int
) -> None:
    # 20·0.1/0.9 = 2.22 -> 2; 20·0.3/0.7 = 8.57 -> 9; 128·0.3/0.7 = 54.9 -> 55; 2·0.2/0.8 = 0.5 -> 1 (half up)
    assert replay_count(domain, fraction) == replay


@pytest.mark.parametrize(("fraction", "replay"), [(0.1, 2), (0.3, 9)])
def test_mixed_set_has_the_documented_replay_sequences(
    tokenizer, replay_file: Path, fraction: float, replay: int
) -> None:  # type: ignore[no-untyped-def]
    domain = domain_set(tokenizer)
    mixed = mix_replay(config("d.jsonl", str(replay_file), fraction), domain, tokenizer, None, "cpu", None)
    assert mixed is not None
    assert len(mixed.dataset) == DOMAIN + replay
    replay_blocks, _ = build_dataset(str(replay_file), tokenizer, SEQ_LEN)
    first = [ids for ids, _ in replay_blocks.examples[:replay]]  # the first R packed blocks, nothing else
    got = [ids for ids, _ in mixed.dataset.examples]
    assert sorted(map(tuple, got)) == sorted(map(tuple, first + [ids for ids, _ in domain.examples]))
    counts = mixed.record["set"]
    assert (counts["domain"]["sequences"], counts[REPLAY]["sequences"]) == (DOMAIN, replay)
    assert counts[REPLAY]["tokens"] == replay * SEQ_LEN  # packed text blocks are seq_len long
    assert counts["replay_share"] == pytest.approx(replay / (DOMAIN + replay))
    assert mixed.record["trained"]["passes"] == 1.0  # epochs 1: each once
    assert mixed.record["trained"][REPLAY]["sequences"] == replay


def test_same_seed_same_order_other_seed_other_order(tokenizer, replay_file: Path) -> None:  # type: ignore[no-untyped-def]
    def order(seed: int) -> list[list[int]]:
        cfg = config("d.jsonl", str(replay_file), 0.3, seed=seed)
        mixed = mix_replay(cfg, domain_set(tokenizer), tokenizer, None, "cpu", None)
        assert mixed is not None
        return [ids for ids, _ in mixed.dataset.examples]

    assert order(0) == order(0)
    assert order(1) != order(0)
    assert sorted(map(tuple, order(1))) == sorted(map(tuple, order(0)))  # the same sequences, reordered


def test_max_steps_trains_on_exactly_the_sequences_its_steps_consume(tokenizer, replay_file: Path) -> None:  # type: ignore[no-untyped-def]
    """N = 6 domain, f = 0.25: R = 2; 16 sequences consumed = two whole passes over the 8: 12 domain, 4 replay."""
    cfg = config("d.jsonl", str(replay_file), 0.25, max_steps=8, batch_size=2)
    mixed = mix_replay(cfg, domain_set(tokenizer, 6), tokenizer, None, "cpu", 16)
    assert mixed is not None and len(mixed.dataset) == 16
    trained = mixed.record["trained"]
    assert (trained["domain"]["sequences"], trained[REPLAY]["sequences"], trained["passes"]) == (12, 4, 2.0)
    assert (trained["domain"]["tokens"], trained[REPLAY]["tokens"]) == (12 * 3, 4 * SEQ_LEN)
    part = stream(domain_set(tokenizer, 6).examples, [([1] * 4, [1] * 4)] * 2, 0, 5)
    assert len(part.examples) == 5  # a part-pass is cut at the sequences consumed


def test_too_small_replay_set_is_an_error(tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    small = write_jsonl(tmp_path / "small.jsonl", [{"prompt": "a", "completion": " b"}] * 3)
    with pytest.raises(InputError, match=r"holds 3 sequences .* of 20 domain sequences needs 9"):
        mix_replay(config("d.jsonl", str(small), 0.3), domain_set(tokenizer), tokenizer, None, "cpu", None)


@pytest.mark.parametrize(
    ("replay", "fraction", "message"),
    [
        (None, 0.1, "replay_fraction 0.1 needs replay_data (the general data mixed in)"),
        (
            "g.jsonl",
            None,
            "replay_data needs replay_fraction (the share of training sequences drawn from it; 0: none)",
        ),
        ("g.jsonl", 1.0, "replay_fraction must be in [0, 1), got 1.0"),
        ("g.jsonl", -0.1, "replay_fraction must be in [0, 1), got -0.1"),
        (
            "builtin:code",
            0.1,
            "replay_data is the training data itself (builtin:code); replay mixes in other data",
        ),
        (
            "builtin:zh-text:test",
            0.1,
            "replay_data builtin:zh-text:test is a held-out split; replay trains on it",
        ),
        ("builtin:zh-txt", 0.1, "unknown built-in data 'builtin:zh-txt'; did you mean 'builtin:zh-text'?"),
    ],
)
def test_bad_replay_settings_are_one_line_errors(
    replay: str | None, fraction: float | None, message: str
) -> None:
    with pytest.raises(DeltarankError) as caught:
        TrainConfig(model="m", data="builtin:code", method="full", output_dir="o", replay_data=replay,
                    replay_fraction=fraction)  # fmt: skip
    assert str(caught.value) == message


def test_replay_fraction_zero_is_the_run_without_replay(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    """Same data, order and batches: the same weights to the bit; run.json says no replay."""
    plain = run_training(tiny_config(tiny_lm_dir, pc_data, tmp_path / "plain", save_steps=0))
    zero = run_training(
        tiny_config(tiny_lm_dir, pc_data, tmp_path / "zero", save_steps=0, replay_data="builtin:zh-text",
                    replay_fraction=0.0)
    )  # fmt: skip
    a, b = (
        load_file(tmp_path / "plain" / "model.safetensors"),
        load_file(tmp_path / "zero" / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert zero.final_loss == plain.final_loss
    assert zero.run["data"]["replay"] is None
    assert (zero.run["config"]["replay_data"], zero.run["config"]["replay_fraction"]) == (None, None)


def test_train_records_replay_counts_in_run_json(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """3 domain examples, f = 0.25: R = round(3·0.25/0.75) = 1 self-sample of 16 tokens; 4 sequences at batch 2,
    one epoch: 2 steps, trained on 3 domain and 1 replay sequence."""
    data = write_jsonl(
        tmp_path / "pc.jsonl", [{"prompt": f"What is {i}?", "completion": f" {i}"} for i in range(5)]
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", "--model", str(tiny_lm_dir), "--data", str(data), "--method", "full",
                                       "-o", str(out), "--max-examples", "3", "--epochs", "1", "--batch-size", "2",
                                       "--seq-len", "16", "--replay-data", "builtin:self-samples",
                                       "--replay-fraction", "0.25", "--progress", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    replay = run["data"]["replay"]
    assert run["steps"] == 2
    assert (replay["data"], replay["fraction"], replay["seed"]) == ("builtin:self-samples", 0.25, 42)
    assert (replay["set"]["domain"]["sequences"], replay["set"]["replay"]["sequences"]) == (3, 1)
    trained = replay["trained"]
    assert (trained["domain"]["sequences"], trained["replay"]["sequences"], trained["passes"]) == (3, 1, 1.0)
    assert trained["replay"]["tokens"] == 16  # one self-sample of seq_len tokens
    assert trained["domain"]["tokens"] == run["data"]["train"]["tokens"]  # the domain set, whole
    assert replay["summary"]["sampling"]["file"] == REPLAY_SAMPLES
    lines = (out / REPLAY_SAMPLES).read_text().splitlines()
    assert len(lines) == 1 and len(json.loads(lines[0])["input_ids"]) == 16


def test_a_killed_replay_run_resumes_on_the_samples_it_drew(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    """max_steps 4 × batch 2: 8 sequences consumed, of the 12 domain records (a file is read whole) and
    round(12·0.2/0.8) = 3 drawn replay ones; the resumed run reads RUN/replay_samples.jsonl back and logs the
    losses of the run that was never stopped."""

    def config(out: Path, **extra: object) -> TrainConfig:
        return tiny_config(tiny_lm_dir, pc_data, out, seq_len=16, max_steps=4, save_steps=3,
                           replay_data="builtin:self-samples", replay_fraction=0.2, **extra)  # fmt: skip

    straight = run_training(config(tmp_path / "straight"))
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        run_training(config(killed), callbacks=[KillAfterStep(4)])
    drawn = (killed / REPLAY_SAMPLES).read_text()
    resumed = run_training(config(killed, resume=True))
    replay = resumed.run["data"]["replay"]
    assert resumed.run["resumed_from_step"] == 3 and replay["summary"]["sampling"]["read_back"]
    assert (killed / REPLAY_SAMPLES).read_text() == drawn
    assert (replay["set"]["domain"]["sequences"], replay["set"]["replay"]["sequences"]) == (12, 3)
    trained = replay["trained"]
    assert trained["domain"]["sequences"] + trained["replay"]["sequences"] == 8
    assert trained == straight.run["data"]["replay"]["trained"]
    assert losses(killed) == losses(tmp_path / "straight")  # the same sequences in the same order
