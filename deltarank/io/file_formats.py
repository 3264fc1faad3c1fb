"""Every file format deltarank writes, with the one function (or class) that writes it and the one that reads it.

`tests/test_file_formats.py` holds the package to this list: a source scan finds every function that writes a
file, and each must be a listed writer (or a write primitive); two writers of one format cannot both be listed;
a JSON format's writer must refuse NaN. The documentation site's format reference is generated from it
(`deltarank.docsite.formats`). Entries are "module:name" strings, so this module imports nothing.
"""

from __future__ import annotations

# A format: (its writers "module:name", all in one module; its reader "module:name", None for files written for
# people: reports, tables, figures; whether it is JSON, which must hold no NaN or infinity).
FileFormat = tuple[tuple[str, ...], str | None, bool]

FORMATS: dict[str, FileFormat] = {
    "run.json": (
        ("deltarank.train.run_record:write_run_record",),
        "deltarank.io.model_ref:read_run_record",
        True,
    ),
    "train_config.yaml": (
        ("deltarank.train.config:TrainConfig",),
        "deltarank.train.config_file:load_train_config",
        False,
    ),
    "train_log.jsonl": (
        ("deltarank.train.callbacks:TrainLogCallback", "deltarank.train.callbacks:_truncate_log"),
        "deltarank.io.run_directory:read_train_log",
        True,
    ),
    "quantization.json": (
        ("deltarank.io.quantization:QuantizationSpec",),
        "deltarank.io.quantization:read_quantization",
        True,
    ),
    "bottleneck_config.json + weights": (
        ("deltarank.train.bottleneck:save_adapter",),
        "deltarank.io.standalone:read_adapter_config",
        True,
    ),
    "analysis result (spectrum, intruders, similarity, extract, placement, recommendation)": (
        ("deltarank.analysis.results.base:ResultFile",),
        "deltarank.analysis.results.read:read_result",
        True,
    ),
    "placement output directory (placement.json + figure)": (
        ("deltarank.cli.placement:write_placement",),
        "deltarank.analysis.results.read:read_result",
        True,
    ),
    "recommend output directory (peft adapter_config.json + recommendation.json)": (
        ("deltarank.train.lora_patterns:write_recommendation",),
        "deltarank.analysis.results.read:read_result",
        True,
    ),
    "spectrum table (.csv)": (("deltarank.analysis.results.spectrum:SpectrumResult",), None, False),
    "spectrum resume cache": (
        ("deltarank.analysis.engine.cache:RecordCache",),
        "deltarank.analysis.engine.cache:RecordCache",
        True,
    ),
    "extracted adapter (peft adapter_config.json + safetensors)": (
        ("deltarank.analysis.tools.extract:extract",),
        "deltarank.io.adapter:parse_adapter_config",
        True,
    ),
    "adapter weights spill (safetensors)": (
        ("deltarank.io.adapter_writer:SafetensorsWriter",),
        "deltarank.io.adapter:AdapterSource",
        False,
    ),
    "mitigated checkpoint or adapter (TUNED's safetensors files rewritten, its config files copied)": (
        ("deltarank.analysis.tools.mitigate:mitigate",),
        "deltarank.io.safetensors_file:SafetensorsSource",
        False,
    ),
    "compare table (.md, .csv, .tex)": (("deltarank.cli.compare:compare",), None, False),
    "evaluate result (.json)": (("deltarank.evaluation.run:_write",), None, True),
    "general_text.jsonl": (
        ("deltarank.evaluation.drift:write_general_text",),
        "deltarank.evaluation.drift:read_general_text",
        True,
    ),
    "generations.jsonl": (("deltarank.evaluation.diversity:measure_diversity",), None, True),
    "self_samples.jsonl": (
        ("deltarank.train.builtin_self_samples:write_self_samples",),
        "deltarank.train.builtin_self_samples:read_self_samples",
        True,
    ),
    "study.yaml": (
        ("deltarank.study.run.directory:prepare_study_dir",),
        "deltarank.study.design.study_file:load_study",
        False,
    ),
    "held-out split (split.json + the two JSONL parts)": (
        ("deltarank.study.design.held_out_split:write_split",),
        "deltarank.study.design.held_out_split:split_records",
        True,
    ),
    "measurement.json": (
        ("deltarank.study.measure.measurement_file:write_measurement",),
        "deltarank.study.measure.measurement_file:saved_measurement",
        True,
    ),
    "subspace.json": (
        ("deltarank.study.measure.subspace:measure_subspace",),
        "deltarank.study.measure.subspace:_read_record",
        True,
    ),
    "study.json + study.csv": (
        ("deltarank.study.report.study_json:write_study",),
        "deltarank.figures.study:read_study",
        True,
    ),
    "summary.json": (
        ("deltarank.study.report.summary:write_summary",),
        "deltarank.figures.learning:load_summary",
        True,
    ),
    "report.md": (("deltarank.study.report.markdown:write_report",), None, False),
}
