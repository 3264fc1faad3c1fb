"""Padding-free batches train on exactly what unbatched examples would: same loss per example, no leaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model

from deltarank.errors import DeltarankError
from deltarank.train.batching import keeps_sequences_apart, make_collator
from deltarank.train.data import FlatCollator, PaddingCollator
from deltarank.train.formats import IGNORE_INDEX
from deltarank.train.trainer import run_training
from tests.conftest import TINY_VOCAB, build_tiny_llama
from tests.train.tiny_runs import tiny_config

PAD = 0
LENGTHS = (9, 4, 13, 6)  # unequal, so a padded batch would pad three of the four
PROMPT = 3  # the first tokens of each example take no loss, as a prompt's do


def examples() -> list[dict[str, list[int]]]:
    """Four examples of unequal length whose first PROMPT tokens are untrained."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for n in LENGTHS:
        ids = torch.randint(1, TINY_VOCAB, (n,), generator=generator).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * PROMPT + ids[PROMPT:]})
    return out


def token_losses(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Per-token next-token losses of one sequence (logits (T, V)); untrained targets give 0."""
    targets = torch.tensor([*labels[1:], IGNORE_INDEX])  # the causal shift: position t predicts t + 1
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")


def unbatched_losses(model: Any, batch: list[dict[str, list[int]]]) -> list[torch.Tensor]:
    """Each example run alone, with no padding and no other sequence in sight."""
    return [
        token_losses(model(input_ids=torch.tensor([f["input_ids"]])).logits[0], f["labels"]) for f in batch
    ]


def flat_losses(model: Any, flat: dict[str, Any], batch: list[dict[str, list[int]]]) -> list[torch.Tensor]:
    """The per-token losses of each example, cut out of one forward pass over the flattened row."""
    logits = model(**flat).logits[0]  # (ΣT, V), or (K, V) for the kept positions
    if "logits_to_keep" in flat:  # only positions with a trained target were projected; the rest take 0
        kept = torch.nn.functional.cross_entropy(logits, flat["shift_labels"][0], reduction="none")
        every = torch.zeros(flat["input_ids"].shape[1]).index_put((flat["logits_to_keep"],), kept)
    else:
        every = token_losses(logits, flat["labels"][0].tolist())
    return list(every.split([len(f["input_ids"]) for f in batch]))


@pytest.mark.parametrize("trained_logits_only", [True, False])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_flat_batch_gives_each_example_its_unbatched_loss(attention: str, trained_logits_only: bool) -> None:
    model = build_tiny_llama(attn_implementation=attention)
    batch = examples()
    flat = FlatCollator(trained_logits_only)(batch)
    assert flat["input_ids"].shape == (1, sum(LENGTHS))  # not one padding token
    with torch.no_grad():
        expected = unbatched_losses(model, batch)
        actual = flat_losses(model, flat, batch)
        padded_loss = model(**PaddingCollator(PAD)(batch)).loss
        flat_loss = model(**flat).loss
    for alone, flattened in zip(expected, actual, strict=True):
        torch.testing.assert_close(flattened, alone, rtol=1e-5, atol=1e-5)  # same mask, same values
    trained = sum(int((loss > 0).sum()) for loss in expected)
    assert trained == sum(n - PROMPT for n in LENGTHS)
    if trained_logits_only:
        assert flat["logits_to_keep"].numel() == trained  # the LM head skips every untrained position
    # the batch loss is the mean over the same trained tokens as the padded batch's
    torch.testing.assert_close(flat_loss, sum(loss.sum() for loss in expected) / trained)
    torch.testing.assert_close(flat_loss, padded_loss, rtol=1e-5, atol=1e-6)


def test_flat_batch_with_a_cache_would_leak_across_examples() -> None:
    """Why the collator sets use_cache=False: with a KV cache the boundaries are not read (the check can fail)."""
    model = build_tiny_llama()
    batch = examples()
    leaky = {**FlatCollator(trained_logits_only=False)(batch), "use_cache": True}
    with torch.no_grad():
        expected = unbatched_losses(model, batch)
        actual = flat_losses(model, leaky, batch)
    assert not torch.allclose(actual[1], expected[1], atol=1e-3)


def test_flat_labels_never_cross_a_boundary() -> None:
    batch = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    flat = FlatCollator()(batch)
    assert flat["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]  # 7 never predicts 8
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert flat["use_cache"] is False
    assert flat["logits_to_keep"].tolist() == [0, 1, 3]  # positions whose next token is trained
    assert flat["shift_labels"].tolist() == [[6, 7, 9]]


class IgnoresPositions(torch.nn.Module):
    """A causal LM that drops position ids, so a flattened row is one long sequence to it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def get_input_embeddings(self) -> Any:
        return self.model.get_input_embeddings()

    def forward(self, position_ids: Any = None, **inputs: Any) -> Any:
        return self.model(**inputs)


def test_check_accepts_llama_and_its_lora_wrapper_and_refuses_a_leaky_model() -> None:
    model = build_tiny_llama()
    model.train()
    lora = get_peft_model(build_tiny_llama(), LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.5))
    for collator in (FlatCollator(trained_logits_only=True), FlatCollator(trained_logits_only=False)):
        assert keeps_sequences_apart(model, collator) and keeps_sequences_apart(lora, collator)
        assert model.training  # the check restores train mode
    leaky = IgnoresPositions(build_tiny_llama())
    assert not keeps_sequences_apart(leaky, FlatCollator(trained_logits_only=False))
    assert make_collator("auto", model, PAD) == FlatCollator(trained_logits_only=True)
    assert isinstance(make_collator("padded", model, PAD), PaddingCollator)
    assert isinstance(make_collator("auto", leaky, PAD), PaddingCollator)  # the fallback
    with pytest.raises(DeltarankError, match="does not keep flattened sequences apart"):
        make_collator("padding-free", leaky, PAD)


def log_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_padding_free_run_learns_what_the_padded_run_learns(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path, method: str
) -> None:
    runs = {}
    for batching in ("padded", "padding-free"):
        out = tmp_path / batching
        # no LoRA dropout: its random mask has the batch's shape, so the two batchings draw different masks
        config = tiny_config(
            tiny_lm_dir, pc_data, out, method=method, max_steps=3, batching=batching, lora_dropout=0.0
        )
        runs[batching] = (run_training(config).run, log_lines(out))
    (padded_run, padded_log), (flat_run, flat_log) = runs["padded"], runs["padding-free"]
    assert padded_run["batching"] == "padded" and flat_run["batching"] == "padding-free"
    assert flat_run["tokens_seen"] == padded_run["tokens_seen"]  # real tokens only, counted alike
    for padded, flat in zip(padded_log, flat_log, strict=True):
        assert flat["step"] == padded["step"] and flat["tokens_seen"] == padded["tokens_seen"]
        assert flat["loss"] == pytest.approx(padded["loss"], rel=1e-4)
        assert flat["grad_norm"] == pytest.approx(padded["grad_norm"], rel=1e-3)
