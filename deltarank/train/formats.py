"""The JSONL record shapes deltarank trains on, and how each becomes token ids and labels.

Shapes (detected per record by its keys; extra keys are ignored):

- `messages`: `{"messages": [{"role", "content"}, ...]}`, rendered with the tokenizer's chat template, or
  `DEFAULT_CHAT_TEMPLATE` (ChatML) when it has none. Loss on the assistant turns only.
- `prompt_completion`: `{"prompt", "completion"}`, strings concatenated as they are (prompt with the
  tokenizer's special prefix, completion followed by EOS), or lists of messages (chat template). Loss on
  the completion.
- `alpaca`: `{"instruction", "input", "output"}` (optional `system`), turned into one user turn
  (instruction and input joined by a newline, as LLaMA-Factory does) and one assistant turn. BELLE's
  single-turn files (train_0.5M_CN, train_2M_CN, ...) have this shape.
- `conversations`: BELLE's multi-turn files (train_3.5M_CN, multiturn_chat_0.8M):
  `{"id", "conversations": [{"from": "human"|"assistant", "value"}, ...]}`, rendered as a chat (human = user).
  Loss on the assistant turns only.
- `text`: `{"text"}` for continued pretraining: documents joined with EOS and packed into `seq_len` blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of a position that takes no loss (the value torch's cross-entropy skips)
FORMATS = ("messages", "prompt_completion", "alpaca", "conversations", "text")
ROLES = ("system", "user", "assistant", "tool")
SPEAKERS = {"human": "user", "assistant": "assistant", "system": "system"}  # BELLE's `from` -> chat role
# The end-of-turn marker of the default template. A tokenizer without a chat template usually has no such
# special token either, so a model trained on it learns to write the marker as text; generation cuts there.
DEFAULT_END_OF_TURN = "<|im_end|>"
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Encoded = tuple[list[int], list[int]]  # (input_ids, labels)


class RecordError(ValueError):
    """A record that has none of the supported shapes or a malformed field (the reader adds file and line)."""


def detect_format(record: Any) -> str:
    """Name the shape of one record, after checking its fields.

    Raises:
        RecordError: not an object, no known shape, or a field of the wrong type.
    """
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        check_messages(record["messages"], "messages")
        return "messages"
    if "prompt" in record and "completion" in record:
        _check_prompt_completion(record["prompt"], record["completion"])
        return "prompt_completion"
    if "conversations" in record:
        check_conversations(record["conversations"])
        return "conversations"
    if "instruction" in record and "output" in record:
        for key in ("instruction", "input", "output", "system"):
            if key in record and not isinstance(record[key], str):
                raise RecordError(f"'{key}' must be a string")
        return "alpaca"
    if "text" in record:
        if not isinstance(record["text"], str):
            raise RecordError("'text' must be a string")
        return "text"
    keys = ", ".join(sorted(record)) or "none"
    raise RecordError(
        f"no known shape (keys: {keys}); expected messages, prompt+completion, instruction+output, "
        "conversations, or text"
    )


def check_messages(messages: Any, key: str) -> None:
    """A non-empty list of {"role", "content"} objects with string content and a known role."""
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"'{key}' must be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RecordError(f"'{key}'[{i}] must be an object with a string 'content'")
        if message.get("role") not in ROLES:
            raise RecordError(
                f"'{key}'[{i}] has role {message.get('role')!r}; expected one of {', '.join(ROLES)}"
            )


def check_conversations(turns: Any) -> None:
    """BELLE's turns: a non-empty list of {"from": human|assistant|system, "value": str}, one assistant turn."""
    if not isinstance(turns, list) or not turns:
        raise RecordError("'conversations' must be a non-empty list of turns")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RecordError(f"'conversations'[{i}] must be an object with a string 'value'")
        if turn.get("from") not in SPEAKERS:
            raise RecordError(
                f"'conversations'[{i}] has from {turn.get('from')!r}; expected one of {', '.join(SPEAKERS)}"
            )
    if not any(turn["from"] == "assistant" for turn in turns):
        raise RecordError("'conversations' has no assistant turn to train on")


def _check_prompt_completion(prompt: Any, completion: Any) -> None:
    if isinstance(prompt, str) and isinstance(completion, str):
        return
    if isinstance(prompt, list) and isinstance(completion, list):
        check_messages(prompt, "prompt")
        check_messages(completion, "completion")
        return
    raise RecordError("'prompt' and 'completion' must both be strings or both be lists of messages")


class Encoder:
    """Turns records of one shape into (input_ids, labels), truncated to `seq_len`.

    Args:
        tokenizer: A Hugging Face tokenizer.
        seq_len: Maximum tokens per example.
    """

    def __init__(self, tokenizer: Any, seq_len: int) -> None:
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
        self._warned_prefix = False

    def encode(self, record: Mapping[str, Any], fmt: str) -> Encoded:
        """Encode one non-text record; the result may have no trained token after truncation."""
        if fmt == "messages":
            ids, labels = self.encode_messages(record["messages"])
        elif fmt == "alpaca":
            ids, labels = self.encode_messages(alpaca_messages(record))
        elif fmt == "conversations":
            ids, labels = self.encode_messages(conversation_messages(record))
        elif isinstance(record["prompt"], list):
            ids, labels = self.encode_messages(record["prompt"] + record["completion"], len(record["prompt"]))
        else:
            ids, labels = self.encode_prompt_completion(record["prompt"], record["completion"])
        return ids[: self.seq_len], labels[: self.seq_len]

    def encode_prompt_completion(self, prompt: str, completion: str) -> Encoded:
        """Prompt tokens (with the tokenizer's own prefix such as BOS) untrained, completion + EOS trained."""
        prompt_ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        completion_ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        completion_ids = [*completion_ids, self.tokenizer.eos_token_id]
        return prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids

    def encode_messages(self, messages: list[dict[str, str]], first_trained: int = 0) -> Encoded:
        """Chat-template a conversation; train on assistant turns at index >= `first_trained`.

        Each assistant turn is found by rendering the conversation up to it (with the generation prompt) and
        up to its end; the text between is trained. A template whose renderings are not prefixes of one
        another (one that rewrites earlier turns) falls back to training on the whole conversation.
        """
        ids: list[int] = []
        labels: list[int] = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i < first_trained:
                continue
            head = self._render(messages[:i], generation_prompt=True)
            full = self._render(messages[: i + 1], generation_prompt=False)
            if not (head.startswith(done) and full.startswith(head)):
                return self._whole_conversation(messages)
            self._append(ids, labels, head[len(done) :], trained=False)
            self._append(ids, labels, full[len(head) :], trained=True)
            done = full
        rest = self._render(messages, generation_prompt=False)
        if not rest.startswith(done):
            return self._whole_conversation(messages)
        self._append(ids, labels, rest[len(done) :], trained=False)
        return ids, labels

    def _whole_conversation(self, messages: list[dict[str, str]]) -> Encoded:
        if not self._warned_prefix:
            logger.warning("chat template rewrites earlier turns; training on whole conversations instead")
            self._warned_prefix = True
        ids = self.tokenizer(self._render(messages, generation_prompt=False), add_special_tokens=False)[
            "input_ids"
        ]
        return ids, list(ids)

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        if not messages and not generation_prompt:
            return ""
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, chat_template=self.template
        )
        return str(text)

    def _append(self, ids: list[int], labels: list[int], text: str, trained: bool) -> None:
        if not text:
            return
        new = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(new)
        labels.extend(new if trained else [IGNORE_INDEX] * len(new))


def alpaca_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """An alpaca record as a chat: [system], user = instruction (+ newline + input), assistant = output."""
    query = record["instruction"] + ("\n" + record["input"] if record.get("input") else "")
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    return [*messages, {"role": "user", "content": query}, {"role": "assistant", "content": record["output"]}]


def conversation_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """A BELLE conversation as chat messages: human -> user, assistant -> assistant."""
    return [{"role": SPEAKERS[turn["from"]], "content": turn["value"]} for turn in record["conversations"]]


def pack_texts(
    tokenizer: Any, texts: Iterable[str], seq_len: int, max_blocks: int | None = None
) -> list[list[int]]:
    """Tokenize documents, join them with EOS and cut the stream into blocks of `seq_len` tokens.

    The incomplete last block is dropped, unless it is the only one. Stops early once `max_blocks` are full.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    blocks: list[list[int]] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=True)["input_ids"])
        stream.append(eos)
        while len(stream) >= seq_len:
            blocks.append(stream[:seq_len])
            del stream[:seq_len]
        if max_blocks is not None and len(blocks) >= max_blocks:
            return blocks[:max_blocks]
    if not blocks and len(stream) >= 2:
        blocks.append(stream)
    return blocks
