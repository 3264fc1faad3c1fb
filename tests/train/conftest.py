"""Fixtures for training tests: a tiny Llama saved with a byte-level BPE tokenizer trained in the fixture."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tests.conftest import build_tiny_llama

TOKENIZER_VOCAB = 320  # 256 bytes + 3 specials + 61 merges
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "Question: What is 12 + 30?\nAnswer: 12 + 30 = 42\n#### 42\n",
    "The quick brown fox jumps over the lazy dog. Ana buys 3 packs of apples.",
    "import os\nfor name in os.listdir('.'):\n    print(name)\n",
] * 20


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, and a busy machine makes two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (no unknown token) that prepends <s> and knows </s> and <pad>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def save_tiny_model(directory: Path, seed: int = 0, **sizes: int) -> Path:
    """Save a tiny Llama (fp32 safetensors) and its tokenizer into `directory`; `sizes` (hidden_size, ...)
    override `build_tiny_llama`'s."""
    tokenizer = train_tokenizer()
    model = build_tiny_llama(
        seed=seed,
        **sizes,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=256,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama + trained tokenizer as a Hugging Face directory (read-only for tests: do not modify)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_lm"))


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    """Write records as JSON lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def pc_data(tmp_path: Path) -> Path:
    """Twelve prompt/completion records about small sums."""
    records = [{"prompt": f"What is {i} + {i}?", "completion": f" {2 * i}"} for i in range(12)]
    return write_jsonl(tmp_path / "pc.jsonl", records)


@pytest.fixture(scope="module")
def wide_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama at hidden 64 / MLP 128: bitsandbytes' CPU 4-bit kernels need in_features >= 64."""
    return save_tiny_model(tmp_path_factory.mktemp("wide_lm"), hidden_size=64, intermediate_size=128)
