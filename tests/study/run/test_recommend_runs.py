"""A study run with `recommend: {from: RUN, budget_rank: R}`: it trains exactly the ranks `deltarank recommend` finds
in RUN's ΔW (kept in DIR/recommendations/), a rerun recomputes and retrains nothing, its identity holds the policy
and the source, bad specs are one-line errors, seeds pair a run with the source of its own seed, the dry run lists
the dependency, and report.md's "Evidence-based ranks" section states the rows' numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from deltarank.analysis.results.recommendation import RecommendationResult
from deltarank.cli import main
from deltarank.errors import InputError
from deltarank.study.design.study_file import parse_study
from deltarank.study.report.markdown import render_report
from deltarank.study.run.recommendation import RECOMMENDATIONS_DIR, recommendation_dir
from deltarank.study.run.run_state import run_status
from deltarank.study.run.runner import run_study
from tests.study.tiny_study import one_thread, tiny_lm, tiny_study, write_study_file

__all__ = ["one_thread", "tiny_lm"]  # fixtures

R = 2
RUNS = [
    {"name": "full", "method": "full"},
    {"name": "lora-r2", "method": "lora", "lora_r": R},
    {"name": "rec", "method": "lora", "recommend": {"from": "full", "budget_rank": R}},
]


def study_raw(folder: Path, model: Path, runs: list[dict[str, Any]] = RUNS, **grid: Any) -> dict[str, Any]:
    raw = tiny_study(folder, model, grid=grid, lr=0.05)
    raw["runs"] = runs
    raw["evaluate"] = {**raw["evaluate"], "diversity_prompts": None}
    return raw


def adapter_ranks(run_dir: Path) -> dict[str, int]:
    weights = load_file(str(run_dir / "adapter_model.safetensors"))
    return {
        name.removeprefix("base_model.model.").removesuffix(".lora_A.weight"): int(t.shape[0])
        for name, t in weights.items()
        if name.endswith("lora_A.weight")
    }


def test_a_recommend_run_trains_the_recommended_ranks(
    tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = study_raw(tmp_path, tiny_lm)
    study = parse_study(raw, "r.yaml")
    out = tmp_path / "study"
    lines: list[str] = []
    document = run_study(study, out, device="cpu", echo=lines.append)
    rec = study.run("rec")
    assert [[r.name for r in wave] for wave in study.levels()] == [["full", "lora-r2"], ["rec"]]

    # what `deltarank recommend BASE full --budget-rank R` writes, on the same run
    cli_out = tmp_path / "cli-rec"
    result = CliRunner().invoke(
        main,
        ["recommend", str(tiny_lm), str(out / "full"), "--budget-rank", str(R), "-o", str(cli_out),
         "--device", "cpu", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    theirs = RecommendationResult.from_json(cli_out / "recommendation.json")
    folder = recommendation_dir(out, rec)
    assert folder.parent == out / RECOMMENDATIONS_DIR
    ours = RecommendationResult.from_json(folder / "recommendation.json")
    assert ours.ranks() == theirs.ranks() and ours.budget == theirs.budget and ours.budget_rank == R
    assert json.loads((folder / "adapter_config.json").read_text()) == {
        **json.loads((cli_out / "adapter_config.json").read_text()),
        "base_model_name_or_path": ours.base,
    }
    assert adapter_ranks(out / "rec") == theirs.ranks()  # the trained adapter: exactly those ranks
    assert len(set(theirs.ranks().values())) > 1  # not uniform: the test tells the two apart
    record = json.loads((out / "rec" / "run.json").read_text())["config"]
    pattern = {k: v for k, v in theirs.ranks().items() if v != theirs.lora_r}
    assert (record["lora_r"], record["lora_rank_pattern"]) == (theirs.lora_r, pattern or None)
    assert adapter_ranks(out / "lora-r2") == dict.fromkeys(adapter_ranks(out / "lora-r2"), R)

    row = next(r for r in document["runs"] if r["name"] == "rec")
    assert row["recommendation"]["trainable_parameters"] == theirs.trainable_parameters
    assert row["recommendation"]["file"] == str(folder.relative_to(out) / "recommendation.json")
    assert row["settings"]["lora_r"] == theirs.lora_r

    # a rerun: nothing recomputed, nothing retrained
    stamp = (folder / "recommendation.json").stat().st_mtime_ns

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("recomputed")

    monkeypatch.setattr("deltarank.analysis.tools.recommend.recommend", refuse)
    monkeypatch.setattr("deltarank.train.trainer.run_training", refuse)
    again: list[str] = []
    run_study(parse_study(raw, "r.yaml"), out, device="cpu", echo=again.append)
    assert sum("done already" in line for line in again) == 3
    assert (folder / "recommendation.json").stat().st_mtime_ns == stamp

    # another policy: another identity, a pending run (its recommendation is not there yet)
    changed = {**RUNS[2], "recommend": {"from": "full", "budget_rank": R + 1}}
    other = parse_study(study_raw(tmp_path, tiny_lm, [*RUNS[:2], changed]), "r.yaml").run("rec")
    assert other.identity() != rec.identity() and recommendation_dir(out, other) != folder
    assert run_status(study, rec, out).state == "done" and run_status(study, other, out).state == "pending"

    # report.md: the section, its numbers those of the rows
    report = (out / "report.md").read_text()
    assert report == render_report(document)
    section = report.split("## Evidence-based ranks", 1)[1].split("\n## ", 1)[0]
    rows = {r["name"]: r for r in document["runs"]}
    for name in ("rec", "lora-r2"):
        line = next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
        cells = [cell.strip() for cell in line.strip("| ").split(" | ")]
        assert cells[3] == f"{rows[name]['cost']['trainable_parameters']:,}"
        assert cells[4] == f"{rows[name]['learning']['held_out_loss']:.4f}"
        assert cells[5].startswith(f"{rows[name]['forgetting']['general_loss_rise']:+.4f}")
    assert "| full |" not in section  # the source is not a low-rank run
    difference = rows["rec"]["learning"]["held_out_loss"] - rows["lora-r2"]["learning"]["held_out_loss"]
    statement = next(line for line in section.splitlines() if line.startswith("- **rec against lora-r2**"))
    assert f"held-out loss, rec − lora-r2 {difference:+.4f} nats/token [" in statement
    assert re.search(r"learning \*\*(consistent|inconsistent|inconclusive)\*\*", statement)
    forgets = (
        rows["rec"]["forgetting"]["general_loss_rise"] - rows["lora-r2"]["forgetting"]["general_loss_rise"]
    )
    assert f"forgetting, rec − lora-r2 {forgets:+.4f} nats/token [" in statement
    assert "claim < 0" in statement and "training noise not included" in statement


@pytest.mark.parametrize(
    ("spec", "method", "message"),
    [
        ({"from": "full"}, "lora", "give exactly one of energy: τ, budget: N and budget_rank: R"),
        ({"from": "full", "energy": 0.9, "budget_rank": 2}, "lora", "give exactly one of energy"),
        ({"budget_rank": 2}, "lora", "give from: RUN"),
        ({"from": "nothing", "budget_rank": 2}, "lora", "from: 'nothing' names no earlier run"),
        (
            {"from": "prompt", "budget_rank": 2},
            "lora",
            "from: prompt is a prompt run, which changes no weight",
        ),
        ({"from": "full", "budget_rank": 2}, "full", "is a full run; recommended ranks train method: lora"),
        ({"from": "full", "energy": 1.5}, "lora", "energy must be a share τ in (0, 1], got 1.5"),
        ({"from": "full", "budget_rank": 0}, "lora", "budget_rank must be a LoRA rank of at least 1"),
        ({"from": "full", "rank": 2}, "lora", "unknown key 'rank'"),
        ("full", "lora", "recommend: must be a mapping"),
    ],
)
def test_bad_recommend_specs_are_one_line_errors(
    tmp_path: Path, tiny_lm: Path, spec: Any, method: str, message: str
) -> None:
    runs = [{"name": "full", "method": "full"}, {"name": "prompt", "method": "prompt"},
            {"name": "rec", "method": method, "recommend": spec}]  # fmt: skip
    with pytest.raises(InputError) as caught:
        parse_study(study_raw(tmp_path, tiny_lm, runs), "r.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("r.yaml: runs[2]: recommend:")


def test_a_seed_axis_pairs_each_seed_with_its_own_source(tmp_path: Path, tiny_lm: Path) -> None:
    runs = [{"name": "rec", "method": "lora", "recommend": {"from": "full", "energy": 0.9}}]
    raw = study_raw(tmp_path, tiny_lm, runs, method=["full", "lora"], seed=[0, 1])
    study = parse_study(raw, "r.yaml")
    full = {r.config["seed"]: r.name for r in study.runs if r.config["method"] == "full"}
    recs = {r.name: r for r in study.runs if r.recommend is not None}
    assert sorted(recs) == ["rec-s0", "rec-s1"]
    for seed in (0, 1):
        made = recs[f"rec-s{seed}"]
        assert made.config["seed"] == seed and made.recommend is not None
        assert made.recommend["from"] == full[seed] and made.depends_on() == [full[seed]]
    # study.yaml's resolved runs read back as the same study (no second expansion)
    assert parse_study(study.resolved, "study.yaml").fingerprint == study.fingerprint
    own = [{**runs[0], "seed": 1}]
    (single,) = [r for r in parse_study(study_raw(tmp_path, tiny_lm, own, method=["full"], seed=[0, 1]),
                                        "r.yaml").runs if r.recommend]  # fmt: skip
    assert single.name == "rec" and single.recommend is not None and single.recommend["from"] == full[1]


def test_the_dry_run_lists_the_dependency(tmp_path: Path, tiny_lm: Path) -> None:
    path = write_study_file(tmp_path / "r.yaml", study_raw(tmp_path, tiny_lm))
    result = CliRunner().invoke(main, ["study", str(path), "--dry-run", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("rec "))
    assert "(LoRA ranks from the ΔW of full: budget_rank 2)" in line and "pending" in line
    assert not (tmp_path / "out").exists()
