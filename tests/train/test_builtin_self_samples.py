"""builtin:self-samples: untruncated T = 1 draws from the run's base model, seeded, sized by the run, written
into the run directory and recorded in run.json; settings that leave it undefined are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.errors import DeltarankError
from deltarank.train.builtin_data import parse_builtin
from deltarank.train.builtin_self_samples import (
    SamplingPlan,
    read_self_samples,
    sample_sequences,
    self_samples,
    write_self_samples,
)
from deltarank.train.data import build_dataset
from deltarank.train.models import load_tokenizer, resolve_model
from deltarank.train.trainer import run_training
from tests.conftest import TINY_VOCAB, build_tiny_llama
from tests.train.tiny_runs import KillAfterStep, Killed, losses, tiny_config

START = 3
DRAWS = 20_000


def peaked_model() -> torch.nn.Module:
    """The tiny Llama with its output layer scaled up: a next-token distribution far from uniform, so that
    another temperature or a truncation would show in the frequencies."""
    model = build_tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def test_first_tokens_are_untruncated_temperature_one_draws() -> None:
    model = peaked_model()
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([[START]])).logits[0, -1].double(), dim=-1)
    drawn = sample_sequences(model, START, DRAWS, 2, seed=0, batch=DRAWS)
    assert all(s[0] == START for s in drawn)
    counts = torch.bincount(torch.tensor([s[1] for s in drawn]), minlength=TINY_VOCAB).double()
    freq = counts / DRAWS
    # each token's frequency within 5 binomial standard deviations (+ 1/N) of softmax(logits) at T = 1
    bound = 5 * (probs * (1 - probs) / DRAWS).sqrt() + 1 / DRAWS
    assert ((freq - probs).abs() <= bound).all()
    assert 0.5 * (freq - probs).abs().sum() < 0.03  # total variation
    # no truncation: the tokens outside transformers' default top_k = 50 keep their mass (and are drawn)
    tail = probs.argsort(descending=True)[50:]
    mass = float(probs[tail].sum())
    assert mass > 0.01
    assert float(freq[tail].sum()) == pytest.approx(mass, abs=5 * (mass / DRAWS) ** 0.5)
    sharper = torch.softmax(torch.log(probs) / 0.7, dim=-1)  # T = 0.7 would be told apart
    assert 0.5 * (freq - sharper).abs().sum() > 0.05


def test_every_position_draws_from_the_full_conditional() -> None:
    """The KV-cache loop draws what full forward passes over each prefix give, with the same generator."""
    model = peaked_model()
    drawn = sample_sequences(model, START, 6, 12, seed=5, batch=6)
    generator = torch.Generator().manual_seed(5)
    ids = torch.full((6, 1), START)
    with torch.no_grad():
        for _ in range(11):
            probs = torch.softmax(model(input_ids=ids).logits[:, -1].float(), dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert drawn == ids.tolist()


def test_draws_are_seeded_sized_and_leave_the_global_generator_alone() -> None:
    model = build_tiny_llama()
    state = torch.random.get_rng_state()
    first = sample_sequences(model, START, 10, 7, seed=1, batch=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(first) == 10 and all(len(s) == 7 and s[0] == START for s in first)
    assert sample_sequences(model, START, 10, 7, seed=1, batch=4) == first
    assert sample_sequences(model, START, 10, 7, seed=2, batch=4) != first


def test_a_run_trains_on_its_samples_and_records_them(tiny_lm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "null"
    result = run_training(
        tiny_config(tiny_lm_dir, "builtin:self-samples", out, seq_len=16, grad_accum=2, seed=3)
    )
    sequences = read_self_samples(out / "self_samples.jsonl")
    assert len(sequences) == 2 * 2 * 2  # max_steps × batch_size × grad_accum: no sequence seen twice
    tokenizer = load_tokenizer(resolve_model(tiny_lm_dir))
    assert all(len(s) == 16 and s[0] == tokenizer.bos_token_id for s in sequences)
    lines = [json.loads(line) for line in (out / "self_samples.jsonl").read_text().splitlines()]
    assert lines[0]["decoded"] == tokenizer.decode(lines[0]["input_ids"])
    train = result.run["data"]["train"]
    assert (train["spec"], train["sequences"], train["tokens"]) == ("builtin:self-samples", 8, 8 * 16)
    sampling = train["sampling"]
    assert (sampling["temperature"], sampling["top_k"], sampling["top_p"], sampling["processors"]) == (
        1.0,
        None,
        1.0,
        [],
    )
    assert (sampling["seed"], sampling["sequences"], sampling["tokens_per_sequence"]) == (3, 8, 16)
    assert sampling["file"] == "self_samples.jsonl" and not sampling["read_back"]
    assert json.loads((out / "run.json").read_text())["data"]["train"]["sampling"] == sampling
    # the same seed draws the same set again
    again = run_training(
        tiny_config(tiny_lm_dir, "builtin:self-samples", tmp_path / "again", seq_len=16, grad_accum=2, seed=3)
    )
    assert read_self_samples(tmp_path / "again" / "self_samples.jsonl") == sequences
    assert again.run["data"]["train"]["sampling"]["generation_batch"] == sampling["generation_batch"]


def test_a_killed_run_resumes_on_the_samples_it_drew(tiny_lm_dir: Path, tmp_path: Path) -> None:
    def config(out: Path, **extra: object):  # type: ignore[no-untyped-def]
        return tiny_config(
            tiny_lm_dir, "builtin:self-samples", out, seq_len=16, max_steps=4, save_steps=3, **extra
        )

    run_training(config(tmp_path / "straight"))
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        run_training(config(killed), callbacks=[KillAfterStep(4)])
    drawn = read_self_samples(killed / "self_samples.jsonl")  # written before the first step
    resumed = run_training(config(killed, resume=True))
    assert resumed.run["resumed_from_step"] == 3 and resumed.run["data"]["train"]["sampling"]["read_back"]
    assert read_self_samples(killed / "self_samples.jsonl") == drawn
    assert losses(killed) == losses(tmp_path / "straight")  # the same sequences in the same order


def test_a_resumed_run_reads_its_samples_back(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, "builtin:self-samples", tmp_path / "o", seq_len=8).resolved()
    tokenizer = load_tokenizer(resolve_model(tiny_lm_dir))
    plan = SamplingPlan.of(config, tokenizer, 4)
    model = build_tiny_llama(vocab_size=len(tokenizer), max_position_embeddings=64)
    drawn = self_samples(plan, model, tokenizer, "cpu")
    path = tmp_path / "self_samples.jsonl"
    write_self_samples(path, drawn, tokenizer)
    back = self_samples(plan, build_tiny_llama(seed=9, vocab_size=len(tokenizer)), tokenizer, "cpu", path)
    assert back.sequences == drawn.sequences and back.sampling["read_back"]
    bigger = SamplingPlan.of(config, tokenizer, 6)
    with pytest.raises(DeltarankError, match="does not hold the 6 sequences of 8 tokens to resume"):
        self_samples(bigger, model, tokenizer, "cpu", path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"max_steps": None, "epochs": 1.0},
            "builtin:self-samples draws max_steps × batch_size × grad_accum sequences: give max_steps "
            "(or max_examples)",
        ),
        (
            {"eval_data": "builtin:self-samples"},
            "builtin:self-samples is training data sampled from the run's own model, not an evaluation set "
            "(eval_data)",
        ),
        (
            {"data": "builtin:self-samples:test"},
            "'builtin:self-samples:test': builtin:self-samples is sampled from the run's own model when it "
            "trains: it has no held-out split",
        ),
    ],
)
def test_undefined_settings_are_refused_when_the_config_is_built(
    tiny_lm_dir: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"data": "builtin:self-samples", **changes}
    data = str(values.pop("data"))
    with pytest.raises(DeltarankError) as caught:
        tiny_config(tiny_lm_dir, data, tmp_path / "o", **values)
    assert str(caught.value) == message


def test_settings_the_model_cannot_draw_are_refused_before_writing(tiny_lm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["train", "--model", str(tiny_lm_dir), "--data", "builtin:self-samples",
                                       "--method", "full", "-o", str(out), "--max-steps", "1",
                                       "--seq-len", "300", "--progress", "none"])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == (
        "Error: builtin:self-samples: seq_len 300 exceeds the model's 256 positions; lower --seq-len\n"
    )
    assert not out.exists()
    result = CliRunner().invoke(main, ["train", "--model", str(tiny_lm_dir), "--data", "builtin:self-samples",
                                       "--method", "full", "-o", str(out), "--epochs", "1"])  # fmt: skip
    assert result.exit_code == 2  # a config the options cannot make: a usage error with its one Error line
    assert result.output.splitlines()[-1] == (
        "Error: builtin:self-samples draws max_steps × batch_size × grad_accum sequences: give max_steps "
        "(or max_examples)"
    )


def test_the_set_has_no_fixed_records() -> None:
    assert parse_builtin("builtin:self-samples").dataset == "self-samples"
    with pytest.raises(DeltarankError, match="drawn from a run's model as it trains"):
        build_dataset("builtin:self-samples", None, 16)
