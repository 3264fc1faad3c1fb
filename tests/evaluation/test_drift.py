"""Forgetting as a divergence (`deltarank.evaluation.drift`): the base model's own samples at T = 1 without
truncation, and the loss rise on them as the Monte Carlo estimate of the mean per-token KL(base ‖ tuned).

On a tiny Llama whose generation_config asks for truncated, cooled sampling (temperature 0.3, top_k 5, top_p 0.5,
min_p 0.1, repetition penalty 1.3), the drawn first tokens still follow softmax(logits) of the model itself;
the loss rise of a perturbed copy equals the exact KL averaged over the same sampled prefixes within 3 standard
errors; the base against an identical copy gives exactly 0.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from scipy import stats
from transformers import AutoModelForCausalLM, AutoTokenizer

from deltarank.evaluation.drift import (
    GENERAL_PROMPTS,
    GENERAL_TEXT,
    below_zero,
    chat_prompt_ids,
    current_general_text,
    drift_loss,
    general_text,
    sample_answers,
    scored_examples,
    write_general_text,
)
from deltarank.evaluation.paired import paired_difference
from deltarank.train.formats import IGNORE_INDEX
from tests.train.conftest import one_thread, save_tiny_model  # noqa: F401 (one_thread: autouse)

DRAWS = 4000  # first tokens drawn for the frequency test
TRUNCATING = {"temperature": 0.3, "top_k": 5, "top_p": 0.5, "min_p": 0.1, "repetition_penalty": 1.3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tests' tiny Llama with its tokenizer; its output layer scaled ×8 so that its next-token distribution
    is far from uniform (truncation or a temperature would show), and its generation_config set to truncate."""
    folder = save_tiny_model(tmp_path_factory.mktemp("drift") / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.generation_config.update(do_sample=True, **TRUNCATING)
    return {"model": model, "tokenizer": tokenizer, "folder": folder}


def _next_token_probabilities(model: Any, prompt_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    return torch.softmax(logits.double(), dim=-1)


def test_samples_follow_the_models_own_distribution(tiny: dict[str, Any]) -> None:
    """4000 first tokens drawn by `sample_answers` match softmax(logits) (chi-square p > 0.001),
    although the model's generation_config asks for top_k 5, top_p 0.5 and temperature 0.3."""
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    prompt_ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": GENERAL_PROMPTS[0]}])
    probabilities = _next_token_probabilities(model, prompt_ids)
    torch.manual_seed(0)
    drawn = [answer[0] for answer in sample_answers(model, tokenizer, prompt_ids, DRAWS, max_new_tokens=1)]
    observed = torch.bincount(torch.tensor(drawn), minlength=probabilities.numel()).double()
    expected = probabilities * DRAWS
    # cells expected fewer than 5 times are pooled into one (the chi-square approximation needs ≥ 5)
    large = expected >= 5
    obs = [*observed[large].tolist(), float(observed[~large].sum())]
    exp = [*expected[large].tolist(), float(expected[~large].sum())]
    assert len(obs) > 6  # the test has cells to tell a truncation: more than top_k 5 tokens are likely
    p_value = stats.chisquare(obs, exp).pvalue
    assert p_value > 1e-3, p_value
    # the mass outside the 5 most likely tokens: what top_k 5 would have drawn 0 times
    outside = float(probabilities.sort(descending=True).values[5:].sum())
    share = float(observed[probabilities.argsort(descending=True)[5:]].sum()) / DRAWS
    standard_error = math.sqrt(outside * (1 - outside) / DRAWS)
    assert outside > 0.2 and abs(share - outside) < 3 * standard_error, (share, outside)


@pytest.fixture(scope="module")
def forgetting_set(tiny: dict[str, Any]) -> list[dict[str, Any]]:
    """The base's own samples: 16 prompts × 8 samples of at most 16 tokens."""
    return general_text(tiny["model"], tiny["tokenizer"], max_new_tokens=16, seed=0, samples=8)


def _exact_kl(base: Any, tuned: Any, records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Per sampled answer position: the exact KL(base ‖ tuned) of the next-token distributions after the
    sampled prefix, and the Monte Carlo term log p_base(y_t) − log p_tuned(y_t) of the drawn token."""
    exact: list[float] = []
    single: list[float] = []
    with torch.no_grad():
        for ids, labels in scored_examples(records):
            inputs = torch.tensor([ids])
            log_p = torch.log_softmax(base(input_ids=inputs).logits[0, :-1].double(), dim=-1)
            log_q = torch.log_softmax(tuned(input_ids=inputs).logits[0, :-1].double(), dim=-1)
            target = torch.tensor(labels[1:])
            keep = target != IGNORE_INDEX
            log_p, log_q, target = log_p[keep], log_q[keep], target[keep]
            exact += (log_p.exp() * (log_p - log_q)).sum(dim=-1).tolist()
            drawn = target.unsqueeze(1)
            single += (log_p.gather(1, drawn) - log_q.gather(1, drawn)).squeeze(1).tolist()
    return exact, single


def test_loss_rise_estimates_the_exact_kl(tiny: dict[str, Any], forgetting_set: list[dict[str, Any]]) -> None:
    """tuned_loss − base_loss on the base's own samples agrees with the exact per-position KL averaged over the
    same sampled prefixes within 3 standard errors (the terms' differences have conditional mean 0)."""
    base, tokenizer = tiny["model"], tiny["tokenizer"]
    tuned = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    estimate = drift_loss(tuned, tokenizer, forgetting_set)["general_loss"]
    estimate -= drift_loss(base, tokenizer, forgetting_set)["general_loss"]
    exact, single = _exact_kl(base, tuned, forgetting_set)
    assert len(exact) == drift_loss(base, tokenizer, forgetting_set)["general_tokens"] > 1000
    exact_mean = sum(exact) / len(exact)
    noise = torch.tensor(single, dtype=torch.float64) - torch.tensor(exact, dtype=torch.float64)
    standard_error = float(noise.std()) / math.sqrt(len(exact))
    assert exact_mean > 10 * standard_error  # a KL the test can tell from 0
    assert estimate == pytest.approx(sum(single) / len(single), abs=1e-5)  # the rise is the mean MC term
    assert abs(estimate - exact_mean) < 3 * standard_error, (estimate, exact_mean, standard_error)


def test_base_against_itself_is_exactly_zero(
    tiny: dict[str, Any], forgetting_set: list[dict[str, Any]]
) -> None:
    base, tokenizer = tiny["model"], tiny["tokenizer"]
    own = drift_loss(base, tokenizer, forgetting_set)
    again = drift_loss(copy.deepcopy(base), tokenizer, forgetting_set)
    assert own["metric"] == "kl_base_tuned_per_token"
    assert own["sampling"] == {
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "samples_per_prompt": 8,
        "answer_tokens": 16,
        "seed": 0,
    }
    assert own["general_sequences"] == 16 * 8
    assert again["general_loss"] - own["general_loss"] == 0.0
    interval = paired_difference(again["per_sequence"], own["per_sequence"])
    assert interval is not None
    assert (interval["estimate"], interval["ci95_low"], interval["ci95_high"]) == (0.0, 0.0, 0.0)


def test_same_seed_same_set(tiny: dict[str, Any], forgetting_set: list[dict[str, Any]]) -> None:
    again = general_text(tiny["model"], tiny["tokenizer"], max_new_tokens=16, seed=0, samples=8)
    assert again == forgetting_set
    assert all(len(r["answer_ids"]) <= 16 for r in again)


def test_only_a_set_drawn_as_asked_is_reused(tmp_path: Path, forgetting_set: list[dict[str, Any]]) -> None:
    path = tmp_path / GENERAL_TEXT
    assert current_general_text(path, 16, 8, seed=0) is None  # missing
    write_general_text(path, forgetting_set)
    assert current_general_text(path, 16, 8, seed=0) == forgetting_set
    assert current_general_text(path, 16, 8) == forgetting_set  # any seed: a run against its base's set
    assert current_general_text(path, 16, 8, seed=1) is None
    assert current_general_text(path, 32, 8, seed=0) is None
    assert current_general_text(path, 16, 4, seed=0) is None
    # a set of the old sampling (T = 0.7, top_p 0.9): chat records only, no token ids, no stamp
    old = [{"messages": r["messages"]} for r in forgetting_set]
    write_general_text(path, old)
    assert current_general_text(path, 16, 8, seed=0) is None
    with pytest.raises(Exception, match="no prompt_ids and answer_ids"):
        scored_examples(old)


def test_below_zero_only_beyond_the_interval() -> None:
    assert below_zero([-0.03, -0.001])
    assert not below_zero([-0.03, 0.002])  # negative estimate, interval reaching 0: noise
    assert not below_zero(None)
