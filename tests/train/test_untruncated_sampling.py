"""The one T = 1 sampler (self-sample null and forgetting set): a prompt of several tokens, the KV-cache loop
against full forward passes, and stopping once every row has drawn a stop token."""

from __future__ import annotations

import torch

from deltarank.train.untruncated_sampling import draw_untruncated
from tests.conftest import build_tiny_llama


def _model() -> torch.nn.Module:
    model = build_tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # a peaked distribution: a wrong position would draw other tokens
    return model


def test_a_prompt_continues_as_full_forward_passes_draw_it() -> None:
    model = _model()
    prefix = torch.tensor([[3, 7, 11, 5]] * 5)
    model.train()
    drawn = draw_untruncated(model, prefix, 9, torch.Generator().manual_seed(4))
    assert model.training  # its mode restored
    model.eval()
    generator = torch.Generator().manual_seed(4)
    ids = prefix
    with torch.no_grad():
        for _ in range(9):
            probs = torch.softmax(model(input_ids=ids).logits[:, -1].float(), dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert (
        drawn.tolist() == ids.tolist()
    )  # (5, 4 + 9): the prompt kept, every token from its full conditional


def test_drawing_stops_once_every_row_has_drawn_a_stop_token() -> None:
    model = _model()
    prefix = torch.tensor([[3]] * 4)
    full = draw_untruncated(model, prefix, 30, torch.Generator().manual_seed(0))
    every = set(range(int(full.max()) + 1))
    assert draw_untruncated(model, prefix, 30, torch.Generator().manual_seed(0), stops=every).shape == (4, 2)
    stop = int(full[0, 5])  # a token row 0 draws at position 5 (its first stop at or before 5)
    cut = draw_untruncated(model, prefix, 30, torch.Generator().manual_seed(0), stops={stop})
    assert cut.tolist() == full[:, : cut.shape[1]].tolist()  # the same draws, cut
    rows_done = [(row[1:] == stop).nonzero() for row in cut]
    assert all(len(found) for found in rows_done) or cut.shape[1] == 31  # every row stopped, or 30 drawn
    if cut.shape[1] < 31:  # it ended at the draw where the last row drew its first stop
        assert max(int(found[0]) for found in rows_done) == cut.shape[1] - 2
