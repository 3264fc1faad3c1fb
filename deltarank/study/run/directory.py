"""The study directory's own file: DIR/study.yaml, the resolved study that makes a rerun of the same study
continue it and keeps another study out without `--force`."""

from __future__ import annotations

from pathlib import Path

import yaml

from deltarank.errors import DeltarankError, OutputError
from deltarank.io.atomic import refuse_overlap, write_atomic
from deltarank.study.design.study import Study
from deltarank.study.design.study_file import AliasError, dump_study_yaml, parse_study, read_study_yaml

STUDY_YAML = "study.yaml"


def prepare_study_dir(study: Study, out_dir: Path, force: bool) -> None:
    """Create `out_dir` for this study, or accept it when it holds the same study; write DIR/study.yaml.

    A directory that holds another study but no run or measurement yet (only study.yaml and held-out splits)
    takes this one. With `force`, a directory holding another study takes this one: runs whose settings are
    unchanged (the same name, hence the same resolved TrainConfig) are kept, the others are trained; run
    directories the new study does not name are left alone and ignored.

    Raises:
        OutputError: `out_dir` is, contains or lies inside one of the study's inputs (`--force` or not), or
            holds another study or other files and `force` is not given.
    """
    from deltarank.study.design.checks import study_input_paths
    from deltarank.study.design.held_out_split import SPLIT_DIR

    refuse_overlap(out_dir, study_input_paths(study))
    saved = out_dir / STUDY_YAML
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    entries = list(out_dir.iterdir()) if out_dir.is_dir() else []
    # study.yaml alone (and held-out splits): a study that stopped before any run or measurement, nothing to lose
    unstarted = saved.is_file() and all(p.name in (STUDY_YAML, SPLIT_DIR) for p in entries)
    if entries and not unstarted and not force:
        if not saved.is_file():
            raise OutputError(f"{out_dir}: already exists and holds no study (use --force to write into it)")
        if _saved_fingerprint(saved) != study.fingerprint:
            raise OutputError(
                f"{out_dir}: holds a different study (use --force to switch it to this study file; runs "
                "with unchanged settings are kept)"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror}") from exc
    text = f"# deltarank study, fingerprint {study.fingerprint}\n" + dump_study_yaml(study.resolved)
    write_atomic(saved, text)


def _saved_fingerprint(path: Path) -> str | None:
    try:
        return parse_study(read_study_yaml(path.read_text(encoding="utf-8")), path).fingerprint
    except (yaml.YAMLError, AliasError, DeltarankError, OSError, UnicodeDecodeError):
        return None
