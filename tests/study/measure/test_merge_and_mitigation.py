"""`evaluate: {merge: true, mitigate: λ}` in a study: DIR/merge.json is `deltarank similarity BASE RUN … --merge` of
the runs (and is kept on a rerun), each row's `mitigated` block counts the intruder directions and holds the
weights `deltarank intruders BASE RUN --mitigate λ` writes, both in report.md; the keys are checked and leave
the measurement hashes of studies made without them as they were."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from deltarank.analysis.results.similarity import SimilarityResult
from deltarank.analysis.tools.similarity import pairwise_mean
from deltarank.cli import main
from deltarank.errors import InputError
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.design.study_file import parse_study
from deltarank.study.measure.measurement_file import evaluate_hash
from deltarank.study.measure.merge import MERGE_FILE, TOO_FEW, merge_groups, merge_section
from deltarank.study.measure.mitigation import MITIGATED_DIR, measure_mitigated
from deltarank.study.report.markdown import render_report
from deltarank.study.run.runner import run_study
from tests.analysis.subspace_models import save_lora
from tests.study.tiny_study import one_thread, tiny_lm, tiny_study

__all__ = ["one_thread", "tiny_lm"]  # fixtures

LAMBDA = 0.5
OVERLAP_TOL = 1e-9


def cli(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def weights(folder: Path) -> dict[str, object]:
    files = sorted(folder.glob("*.safetensors"))
    assert files, folder
    return {name: tensor for file in files for name, tensor in load_file(str(file)).items()}


def test_a_study_with_merge_and_mitigate(tmp_path: Path, tiny_lm: Path) -> None:
    raw = tiny_study(tmp_path, tiny_lm, grid={"method": ["full", "lora"]}, lr=0.05)
    raw["evaluate"] = {**raw["evaluate"], "diversity_prompts": None, "merge": True, "mitigate": LAMBDA}
    out = tmp_path / "study"
    study = run_study(parse_study(raw, "m.yaml"), out, device="cpu", echo=lambda s: None)
    names = [row["name"] for row in study["runs"]]

    # merge.json: what `deltarank similarity BASE RUN_1 RUN_2 --merge` computes on the same runs
    ours = SimilarityResult.from_json(out / MERGE_FILE)
    cli(
        "similarity",
        tiny_lm,
        *(out / n for n in names),
        "--merge",
        "-o",
        tmp_path / "sim.json",
        "--device",
        "cpu",
        "-q",
    )
    theirs = SimilarityResult.from_json(tmp_path / "sim.json")
    assert ours.merge is not None and theirs.merge is not None
    assert [m.name for m in ours.matrices] == [m.name for m in theirs.matrices] and ours.matrices
    for mine, other in zip(ours.matrices, theirs.matrices, strict=True):
        assert mine.merge is not None and other.merge is not None
        for row_a, row_b in zip(mine.merge.overlap, other.merge.overlap, strict=True):
            assert row_a == pytest.approx(row_b, abs=OVERLAP_TOL), mine.name
    section = study["subspace"]["merge"]
    (group,) = section["groups"]
    assert group["runs"] == names and group["file"] == MERGE_FILE and not section["skipped"]
    for module in ours.merge.modules:
        summary = group["modules"][module.module]
        assert summary["overlap"] == pytest.approx(pairwise_mean(module.overlap))
        assert set(summary["dare_error"]) == {"0.5", "0.9"}
    assert (out / "figures" / f"{group['figure']}.png").is_file()

    # mitigated: the intruders `deltarank intruders --mitigate` scales, and its weights
    for row in study["runs"]:
        block = row["mitigated"]
        stdout = cli(
            "intruders",
            tiny_lm,
            out / row["name"],
            "--mitigate",
            LAMBDA,
            "-o",
            tmp_path / row["name"],
            "--device",
            "cpu",
        )
        count = int(re.search(r"Wrote .*: (\d+) intruder directions", stdout).group(1))  # type: ignore[union-attr]
        assert block["lambda"] == LAMBDA and block["intruders"] == count, row["name"]
        mine, other = weights(out / block["dir"]), weights(tmp_path / row["name"])
        assert mine.keys() == other.keys() and all(mine[k].equal(other[k]) for k in mine)  # type: ignore[attr-defined]
        assert block["learning"]["held_out_loss"] > 0 and "general_loss_rise" in block["forgetting"]
        assert "held_out_loss_change_ci95" in block["learning"] and "per_sequence" not in block
        if count == 0:  # nothing scaled: the same model, the same losses
            assert block["learning"]["held_out_loss"] == pytest.approx(row["learning"]["held_out_loss"])
    assert any(row["mitigated"]["intruders"] > 0 for row in study["runs"])
    assert "mitigated" not in study["base"]

    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Merge geometry" in report and f"](figures/{group['figure']}.png)" in report
    assert "## Intruder mitigation" in report and f"| {names[0]} | 0.5 |" in report

    # a rerun with the same runs measures nothing again
    lines: list[str] = []
    before = (out / MERGE_FILE).stat().st_mtime_ns
    run_study(parse_study(raw, "m.yaml"), out, device="cpu", echo=lines.append)
    assert (out / MERGE_FILE).stat().st_mtime_ns == before
    assert not [line for line in lines if "[subspace]" in line or "measuring" in line or "training" in line]


def test_runs_are_grouped_by_base_and_too_few_is_a_note(tmp_path: Path) -> None:
    bases = {"a": "/m/base", "b": "/m/base", "c": "/s/a", "d": "/other"}
    groups, skipped = merge_groups(list(bases), bases.__getitem__)
    assert [(g.runs, g.file, g.figure) for g in groups] == [(("a", "b"), MERGE_FILE, "merge_geometry")]
    assert [s["runs"] for s in skipped] == [["c"], ["d"]] and "nothing to merge" in skipped[0]["reason"]
    groups, skipped = merge_groups(["a", "b", "c"], {"a": "/x/a", "b": "/y", "c": "/y"}.__getitem__)
    assert [(g.runs, g.file, g.figure) for g in groups] == [(("b", "c"), "merge-y.json", "merge_geometry-y")]
    section = merge_section([], [], tmp_path, runs_with_delta=1)
    assert section == {"groups": [], "skipped": [], "note": TOO_FEW}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mitigate": 0}, "mitigate must be λ, a number in (0, 1]"),
        ({"mitigate": 1.5}, "mitigate must be λ"),
        ({"mitigate": True}, "mitigate must be λ"),
        ({"mitigate": "0.5"}, "mitigate must be λ"),
        ({"merge": "yes"}, "merge must be true or false"),
    ],
)
def test_bad_values_are_one_line_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as error:
        EvaluateSpec.from_mapping(raw)
    assert message in str(error.value) and len(str(error.value).splitlines()) == 1


def test_the_keys_off_keep_the_measurement_hash_of_studies_made_before_them() -> None:
    new = ("merge", "mitigate")
    fields = [(f.name, f.type, f.default) for f in dataclasses.fields(EvaluateSpec) if f.name not in new]
    before = dataclasses.make_dataclass("EvaluateSpec", fields, frozen=True)  # the spec without the keys
    spec = EvaluateSpec(held_out_sequences=8, placement=True)
    assert evaluate_hash(before(held_out_sequences=8, placement=True)) == evaluate_hash(spec)  # type: ignore[arg-type]
    assert EvaluateSpec.from_mapping({"mitigate": 1, "merge": True}).mitigate == 1.0
    assert evaluate_hash(dataclasses.replace(spec, merge=True)) == evaluate_hash(spec)  # study level
    on = dataclasses.replace(spec, mitigate=LAMBDA)
    assert evaluate_hash(on.for_run("full")) != evaluate_hash(spec.for_run("full"))
    assert evaluate_hash(on.for_run(None)) == evaluate_hash(spec.for_run(None))  # bases have no ΔW


def test_a_run_the_tool_cannot_mitigate_gets_a_note(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A DoRA adapter is refused by `mitigate` before anything is written: the row says so, and the report lists
    it under the table of the runs that were mitigated."""
    dora = save_lora(tmp_path / "dora", use_dora=True)
    block = measure_mitigated(None, tiny_model_dir, dora, LAMBDA, "cpu", lambda model, out: {})
    assert block["lambda"] == LAMBDA and "only dense checkpoints and PEFT LoRA adapters" in block["note"]
    assert not (dora / MITIGATED_DIR).exists()
    runs = [{"name": "dora", "mitigated": block}, {"name": "full", "learning": {}}]
    report = render_report({"study": {"name": "t"}, "runs": runs})
    assert "## Intruder mitigation" in report and "- dora: not mitigated:" in report
