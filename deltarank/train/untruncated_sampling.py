"""The one sampler of a model's own distribution: every token drawn from softmax(logits) at temperature 1.

Two measurements need exact draws of the base model's distribution: the self-sample null's training set
(`deltarank.train.builtin_self_samples`: sequences from a start token) and the forgetting set
(`deltarank.evaluation.drift`: answers to general prompts, whose mean log-ratio estimates KL(base ‖ tuned)).
Both draw here. The loop is deltarank's own (a forward pass with a KV cache, then `torch.multinomial` on the
last position's softmax), not `generate`, whose `generation_config` may carry a top-k (transformers' default is
50), a top-p, a repetition penalty or any other logits processor: nothing truncates or reshapes the
distribution, and a stop token is drawn like any other. The draws use the `generator` given (a private
generator leaves the global one, which initialises LoRA, as it was); the model runs in eval mode, restored
afterwards.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TEMPERATURE = 1.0  # what the draws are: softmax(logits / 1), no truncation (top_p 1, top_k 0)
TOP_P = 1.0
TOP_K = 0


def draw_untruncated(
    model: Any,
    prefix: torch.Tensor,
    new_tokens: int,
    generator: torch.Generator | None,
    stops: Collection[int] = (),
) -> torch.Tensor:
    """`prefix` (B, P) followed by up to `new_tokens` tokens per row, each drawn from the model's next-token
    distribution at temperature 1 after the row's prefix and earlier draws.

    Args:
        model: A causal LM (eval mode is set for the draws and the previous mode restored).
        prefix: Token ids, (B, P) on the model's device, every row the same length (no padding).
        new_tokens: Tokens to draw after the prefix.
        generator: The random generator on the model's device; None: torch's global one.
        stops: Stop tokens: drawing ends early once every row has drawn one (what follows a row's first stop
            is still drawn while other rows go on; the caller cuts it). Empty: always `new_tokens`.

    Returns:
        (B, P + k) token ids, k ≤ `new_tokens`.
    """
    import torch

    keyword = _cache_keyword(model)
    stop_ids = torch.tensor(sorted(stops), dtype=torch.long, device=prefix.device)
    finished = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
    was_training = model.training
    model.eval()
    drawn = [prefix]
    try:
        with torch.no_grad():
            cache = None
            for _ in range(new_tokens):
                out = model(input_ids=drawn[-1], use_cache=True, logits_to_keep=1, **{keyword: cache})
                cache = getattr(out, keyword)
                probs = torch.softmax(out.logits[:, -1, :].float() / TEMPERATURE, dim=-1)  # (B, V)
                token = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
                drawn.append(token)
                if len(stop_ids):
                    finished |= torch.isin(token[:, 0], stop_ids)
                    if bool(finished.all()):
                        break
    finally:
        model.train(was_training)
    return torch.cat(drawn, dim=1)


def _cache_keyword(model: Any) -> str:
    """The name of the KV cache in the model's forward and output: transformers 5.25 renamed `past_key_values`
    to `cache` (and warns on the old name); earlier 5.x releases know only `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
