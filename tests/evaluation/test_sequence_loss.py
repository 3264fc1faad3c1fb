"""sequence_loss on a plain model and on a prompt-tuned one (whose logits start with the virtual tokens')."""

from __future__ import annotations

import torch
from peft import PromptTuningConfig, get_peft_model

from deltarank.evaluation.loss import sequence_loss, sequence_losses
from deltarank.train.formats import IGNORE_INDEX
from tests.conftest import build_tiny_llama

VIRTUAL = 3
IDS = [5, 9, 2, 7, 11, 4]
LABELS = [IGNORE_INDEX, IGNORE_INDEX, 2, 7, 11, 4]  # loss on the last four tokens


def reference_loss(logits: torch.Tensor) -> float:
    """Mean cross-entropy of the labelled positions from (T, V) logits of the real tokens."""
    targets = torch.tensor(LABELS[1:])
    return float(torch.nn.functional.cross_entropy(logits[:-1], targets, ignore_index=IGNORE_INDEX))


def test_plain_model_loss_is_the_mean_over_labelled_tokens() -> None:
    model = build_tiny_llama()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([IDS])).logits[0]
    assert abs(sequence_loss(model, [(IDS, LABELS)], pad_id=0) - reference_loss(logits)) < 1e-5


def test_prompt_tuned_model_scores_the_real_tokens_not_the_virtual_ones() -> None:
    base = build_tiny_llama()
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL)).eval()
    with torch.no_grad():
        prompt = model.get_prompt(batch_size=1)  # (1, VIRTUAL, hidden)
        tokens = base.get_input_embeddings()(torch.tensor([IDS]))  # (1, T, hidden)
        logits = base(inputs_embeds=torch.cat([prompt, tokens], dim=1)).logits[0, VIRTUAL:]  # (T, V)
    expected = reference_loss(logits)
    assert abs(sequence_loss(model, [(IDS, LABELS)], pad_id=0) - expected) < 1e-5
    # the virtual tokens change the loss: the test would not pass with the base model's numbers
    assert abs(sequence_loss(base, [(IDS, LABELS)], pad_id=0) - expected) > 1e-4


def test_loss_is_computed_without_autograd() -> None:
    """Evaluation builds no graph: the forward pass runs with gradients off (memory stays that of inference)."""
    model = build_tiny_llama()
    seen: list[bool] = []
    model.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    sequence_loss(model, [(IDS, LABELS)], pad_id=0)
    assert seen == [False]


def test_per_sequence_sums_are_each_examples_own_loss_and_add_up_to_the_mean() -> None:
    model = build_tiny_llama()
    other = ([3, 8, 1, 6], [IGNORE_INDEX, 8, 1, 6])  # shorter: padded in the batch
    found = sequence_losses(model, [(IDS, LABELS), other], pad_id=0)
    assert found["counts"] == [4, 3]
    for (ids, labels), total, count in zip(
        [(IDS, LABELS), other], found["sums"], found["counts"], strict=True
    ):
        alone = sequence_loss(model, [(ids, labels)], pad_id=0)  # no padding: the example on its own
        assert abs(total / count - alone) < 1e-5
    assert abs(sum(found["sums"]) / sum(found["counts"]) - found["loss"]) < 1e-6
    assert found["loss"] == sequence_loss(model, [(IDS, LABELS), other], pad_id=0)


def test_losses_are_taken_without_building_a_graph() -> None:
    model = build_tiny_llama()
    seen: list[bool] = []
    model.register_forward_hook(lambda *args: seen.append(torch.is_grad_enabled()))
    sequence_losses(model, [(IDS, LABELS)], pad_id=0)
    sequence_loss(model, [(IDS, LABELS)], pad_id=0)
    assert seen == [False, False]
