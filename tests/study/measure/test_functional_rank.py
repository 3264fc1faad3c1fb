"""A study's functional rank: a planted rank-2 ΔW needs two directions, a study with `functional_rank: true`
writes the section into study.json and report.md, and studies without the key keep their measurement hashes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltarank.errors import InputError
from deltarank.evaluation.drift import general_text
from deltarank.evaluation.models import EvalModels
from deltarank.io.naming import layer_index
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.design.study_file import parse_study
from deltarank.study.measure.functional_rank import measure_functional_rank
from deltarank.study.measure.measurement_file import evaluate_hash
from deltarank.study.run.runner import run_study
from deltarank.train.models import load_tokenizer, resolve_model
from tests.study.tiny_study import one_thread, tiny_lm, tiny_study
from tests.train.conftest import save_tiny_model, write_jsonl

__all__ = ["one_thread", "tiny_lm"]  # fixtures


def save_planted(base_dir: Path, out_dir: Path, rank: int) -> Path:
    """The base with a random rank-`rank` ΔW added to every block linear weight, saved as a full fine-tune."""
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.ndim == 2 and layer_index(name) is not None:
                left = torch.randn(weight.shape[0], rank, generator=generator)
                right = torch.randn(rank, weight.shape[1], generator=generator) * torch.tensor([[1.0], [0.5]])
                weight += 0.5 * (left @ right) / weight.shape[1] ** 0.5
    model.save_pretrained(out_dir)
    return out_dir


def test_a_planted_rank_two_delta_needs_two_directions(tmp_path: Path) -> None:
    base_dir = save_tiny_model(tmp_path / "base")
    tuned_dir = save_planted(base_dir, tmp_path / "tuned", rank=2)
    held_out = write_jsonl(
        tmp_path / "held.jsonl",
        [{"prompt": f"What is {i} + 1?", "completion": f" {i + 1}"} for i in range(6)],
    )
    spec = EvaluateSpec(held_out=str(held_out), held_out_sequences=6, seq_len=48, functional_rank=True)
    source = resolve_model(str(base_dir))
    tokenizer = load_tokenizer(source)
    loader = EvalModels(source, "cpu")
    general = general_text(loader.base(), tokenizer, 6, 0, samples=1)

    section = measure_functional_rank(loader, tuned_dir, tokenizer, spec, str(held_out), general)

    assert section["matrices"] == 14 and section["ks"] == [0, 1, 2, 4, 8, 16, 32]
    for name in ("learning", "drift"):
        shares = section[name]["share"]
        assert shares[0] == pytest.approx(0.0, abs=1e-5), name  # no other parameter changed
        assert shares[1] != pytest.approx(1.0, abs=1e-3), name  # one direction is not all of it
        assert shares[2:] == pytest.approx([1.0] * 5, abs=1e-4), name  # two are the whole ΔW
        assert all(ci is not None and ci[0] <= ci[1] for ci in section[name]["share_ci95"][1:]), name
    assert section["k90"] is not None and section["k90"] <= 2
    assert section["k90_upper"] is not None and section["k90_upper"] <= 2
    json.dumps(section, allow_nan=False)


def test_a_study_with_the_key_writes_the_section(tmp_path: Path, tiny_lm: Path) -> None:
    raw = tiny_study(tmp_path, tiny_lm, grid={"method": ["full", "lora"]})
    raw["evaluate"] = {**raw["evaluate"], "diversity_prompts": None, "functional_rank": True}
    study = run_study(parse_study(raw, "fr.yaml"), tmp_path / "study", device="cpu", echo=lambda s: None)

    for row in study["runs"]:
        section = row["functional_rank"]
        assert section["ks"][0] == 0 and "k90" in section, row["name"]
        assert len(section["learning"]["share"]) == len(section["drift"]["share"]) == len(section["ks"])
        assert section["learning"]["share"][-1] == pytest.approx(1.0, abs=1e-3), row["name"]  # the whole ΔW
        # the study's own measurements of the run and its base are the ends of the shares
        assert section["learning"]["tuned"] == row["learning"]["held_out_loss"]
        assert section["drift"]["tuned"] == row["forgetting"]["general_loss"]
        assert section["learning"]["base"] == study["base"]["learning"]["held_out_loss"]
    lora = next(r for r in study["runs"] if r["settings"]["method"] == "lora")
    assert lora["functional_rank"]["ks"][-1] <= lora["settings"]["lora_r"]  # a LoRA ΔW has rank ≤ r
    report = (tmp_path / "study" / "report.md").read_text()
    assert "## Functional rank" in report and "k₉₀ func" in report
    assert "functional_rank.k90" in (tmp_path / "study" / "study.csv").read_text().splitlines()[0]


def test_the_key_off_keeps_the_measurement_hash_of_studies_made_before_it() -> None:
    fields = [
        (f.name, f.type, f.default) for f in dataclasses.fields(EvaluateSpec) if f.name != "functional_rank"
    ]
    before = dataclasses.make_dataclass("EvaluateSpec", fields, frozen=True)  # the spec without the key
    for values in ({}, {"held_out_sequences": 8, "checkpoints": True}):
        spec = EvaluateSpec(**values)  # type: ignore[arg-type]
        assert evaluate_hash(before(**values)) == evaluate_hash(spec)  # type: ignore[arg-type]
        assert evaluate_hash(dataclasses.replace(spec, functional_rank=True)) != evaluate_hash(spec)


def test_a_list_of_run_names_measures_those_runs_and_keeps_the_others(tmp_path: Path, tiny_lm: Path) -> None:
    """`functional_rank: [name]` after a study was measured: only that run is measured again (its hash is the
    `true` one); the other run and the base keep their measurement.json files untouched."""
    raw = tiny_study(tmp_path, tiny_lm, grid={"method": ["full", "lora"]})
    raw["evaluate"] = {**raw["evaluate"], "diversity_prompts": None}
    out = tmp_path / "study"
    first = run_study(parse_study(raw, "fr.yaml"), out, device="cpu", echo=lambda s: None)
    full, lora = (
        next(r["name"] for r in first["runs"] if r["settings"]["method"] == m) for m in ("full", "lora")
    )
    files = {p: p.stat().st_mtime_ns for p in out.rglob("measurement.json")}

    raw["evaluate"] = {**raw["evaluate"], "functional_rank": [full]}
    study = parse_study(raw, "fr.yaml")
    assert study.evaluate.for_run(full).functional_rank is True
    assert study.evaluate.for_run(lora).functional_rank is False
    assert evaluate_hash(study.evaluate.for_run(lora)) == evaluate_hash(
        EvaluateSpec.from_mapping(raw["evaluate"] | {"functional_rank": False})
    )
    second = run_study(study, out, device="cpu", force=True, echo=lambda s: None)  # another evaluate:

    rows = {r["name"]: r for r in second["runs"]}
    assert "k90" in rows[full]["functional_rank"] and "functional_rank" not in rows[lora]
    changed = {p for p, t in files.items() if p.stat().st_mtime_ns != t}
    assert changed == {out / full / "measurement.json"}


def test_functional_rank_names_must_be_runs(tmp_path: Path, tiny_lm: Path) -> None:
    raw = tiny_study(tmp_path, tiny_lm, grid={"method": ["full"]})
    raw["evaluate"] = {**raw["evaluate"], "functional_rank": ["nope"]}
    with pytest.raises(InputError, match="functional_rank names 'nope', which is not a run"):
        parse_study(raw, "fr.yaml")
    raw["evaluate"] = {**raw["evaluate"], "functional_rank": 3}
    with pytest.raises(InputError, match="true, false or a list of run names"):
        parse_study(raw, "fr.yaml")
