"""Same base or refuse (#24 finding 7): a Llama base against an unrelated Qwen2 checkpoint whose layer shapes
match gave ranks and exit 0. Now the configs are compared before anything is paired (one line naming both, exit
1, no output), `--allow-different-base` overrides, and from the tensors alone a large median ‖ΔW‖/‖W‖ is a
warning in the result (`different_base`) and on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from deltarank.analysis.engine import spectrum
from deltarank.analysis.results.spectrum import SpectrumResult
from deltarank.cli import main
from deltarank.errors import PairingError
from deltarank.io.architecture import read_architecture
from tests.conftest import (
    TINY_HIDDEN,
    TINY_INTERMEDIATE,
    TINY_VOCAB,
    build_tiny_llama,
    take_sgd_steps,
)

NOT_SAME = "not the same base model"


def _qwen2(layers: int) -> Qwen2ForCausalLM:
    """A tiny Qwen2 whose every shared tensor has the tiny Llama's shape (it adds q/k/v biases)."""
    torch.manual_seed(1)
    config = Qwen2Config(
        vocab_size=TINY_VOCAB,
        hidden_size=TINY_HIDDEN,
        intermediate_size=TINY_INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """llama (2 layers), qwen2 (3 layers, same widths), a fine-tune of the llama, and the qwen2's weights as a
    bare .safetensors file (no config.json beside it: only the tensors can tell)."""
    root = tmp_path_factory.mktemp("same_base")
    llama = build_tiny_llama()
    llama.save_pretrained(root / "llama")
    take_sgd_steps(llama, steps=2, lr=0.01)
    llama.save_pretrained(root / "llama_tuned")
    qwen = _qwen2(layers=3)
    qwen.save_pretrained(root / "qwen2")
    bare = root / "bare"
    bare.mkdir()
    save_file({k: v.contiguous() for k, v in qwen.state_dict().items()}, str(bare / "qwen2.safetensors"))
    save_file(
        {k: v.contiguous() for k, v in build_tiny_llama().state_dict().items()},
        str(bare / "llama.safetensors"),
    )
    return {
        "llama": root / "llama",
        "tuned": root / "llama_tuned",
        "qwen2": root / "qwen2",
        "bare_llama": bare / "llama.safetensors",
        "bare_qwen2": bare / "qwen2.safetensors",
    }


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_pair_of_the_issue_has_matching_shapes(models: dict[str, Path]) -> None:
    """The premise: without the config check every shared tensor pairs (the issue's exit 0)."""
    from deltarank.io.naming import Selection
    from deltarank.io.pairing import plan_dense
    from deltarank.io.source import open_checkpoint

    pairs, skipped = plan_dense(
        open_checkpoint(models["llama"]), open_checkpoint(models["qwen2"]), Selection()
    )
    assert len(pairs) == 14 and all("shape mismatch" not in s.reason for s in skipped)


@pytest.mark.parametrize("command", ["spectrum", "intruders", "similarity", "extract"])
def test_unrelated_models_are_refused_with_one_line_naming_both(
    models: dict[str, Path], tmp_path: Path, command: str
) -> None:
    out = tmp_path / "out"
    args: list[object] = [command, models["llama"], models["qwen2"]]
    if command == "similarity":
        args.append(models["tuned"])
    args += ["-o", out, "--device", "cpu"]
    if command == "extract":
        args += ["--lora-rank", "2"]
    for extra in ([], ["--dry-run"]):  # the dry run makes the same check
        result = _run(*args, *extra)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert lines[0] == (
            f"Error: base {models['llama']} is llama (2 layers, hidden 32), tuned {models['qwen2']} is qwen2 "
            f"(3 layers, hidden 32): {NOT_SAME} (model type llama vs qwen2, layers 2 vs 3); pass "
            "--allow-different-base to compare anyway"
        )
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_allow_different_base_compares_and_warns_from_the_tensors(
    models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "s.json"
    result = _run(
        "spectrum", models["llama"], models["qwen2"], "-o", out, "--device", "cpu", "--allow-different-base"
    )
    assert result.exit_code == 0, result.output
    spectra = SpectrumResult.from_json(out)
    assert spectra.different_base is not None and "are these the same base model?" in spectra.different_base
    assert json.loads(out.read_text())["different_base"] == spectra.different_base  # in the file
    assert f"Warning: {spectra.different_base}" in result.stderr  # and on stderr
    ratios = sorted(m.delta_norm / (m.base_norm or 1) for m in spectra.matrices)
    assert ratios[len(ratios) // 2] > 1.0  # unrelated weights of one scale: ~√2


def test_without_configs_the_tensors_alone_warn(models: dict[str, Path]) -> None:
    assert read_architecture(models["bare_llama"]) is None  # no config.json beside the files
    result = spectrum(models["bare_llama"], models["bare_qwen2"], device="cpu")
    assert result.different_base is not None
    assert "median ‖ΔW‖/‖W‖ is 1." in result.different_base
    assert result.warnings()[0] == result.different_base


def test_a_real_fine_tune_raises_no_suspicion(models: dict[str, Path]) -> None:
    result = spectrum(models["llama"], models["tuned"], device="cpu")
    assert result.different_base is None
    assert not any("same base model" in w for w in result.warnings())


def test_the_library_refuses_too_and_the_option_overrides(models: dict[str, Path]) -> None:
    with pytest.raises(PairingError, match=NOT_SAME):
        spectrum(models["llama"], models["qwen2"], device="cpu")
    assert spectrum(models["llama"], models["qwen2"], device="cpu", allow_different_base=True).matrices


def test_a_larger_vocabulary_alone_is_allowed(models: dict[str, Path], tmp_path: Path) -> None:
    """A fine-tune may add tokens: a different vocab_size alone is not a different base."""
    grown = tmp_path / "grown"
    model = build_tiny_llama()
    take_sgd_steps(model, steps=1, lr=0.01)
    model.resize_token_embeddings(TINY_VOCAB + 8)
    model.save_pretrained(grown)
    result = spectrum(models["llama"], grown, device="cpu")
    assert result.matrices and result.different_base is None


def test_a_gguf_base_is_compared_by_its_metadata(tmp_path: Path) -> None:
    """GGUF metadata against a config.json: the numbers are compared (a GGUF names a Mistral `llama`, so the model
    types of two kinds of file are not)."""
    from tests.planting import write_llama_gguf

    llama = build_tiny_llama()
    gguf_base = write_llama_gguf(tmp_path / "base.gguf", llama.state_dict(), llama.config)
    architecture = read_architecture(gguf_base)
    assert architecture is not None and architecture.summary() == "llama (2 layers, hidden 32)"
    deeper = tmp_path / "deeper"
    build_tiny_llama(num_hidden_layers=3).save_pretrained(deeper)
    with pytest.raises(
        PairingError, match=r"llama \(3 layers, hidden 32\): not the same base model \(layers 2 vs 3\)"
    ):
        spectrum(gguf_base, deeper, device="cpu")
    same = tmp_path / "same"
    llama.save_pretrained(same)
    assert spectrum(gguf_base, same, device="cpu").matrices


def test_a_multimodal_config_is_compared_by_its_language_model(tmp_path: Path) -> None:
    """gemma3's multimodal config.json nests the language model in text_config (model_type gemma3_text)."""
    text = {"model_type": "gemma3_text", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    (tmp_path / "multi").mkdir()
    (tmp_path / "multi" / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": text}))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "config.json").write_text(json.dumps(text))
    multi, plain = read_architecture(tmp_path / "multi"), read_architecture(tmp_path / "text")
    assert multi is not None and plain is not None
    assert multi == plain and multi.summary() == "gemma3_text (2 layers, hidden 64)"
