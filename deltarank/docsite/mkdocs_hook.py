"""The MkDocs hook of the documentation site (`hooks:` in mkdocs.yml): generated pages, made at build time.

Nothing is written into the docs folder. `on_config` expands two nav entries (`commands/index.md` into one page
per subcommand, `results.md` into the benchmark and study reports); `on_files` adds the generated reference
pages (`deltarank.docsite.pages`) and the reports under `benchmarks/results/`, served from where they are, at
their paths in the repository (so their relative links, e.g. to images, keep working; an image they link to
is added the same way). The site thus mirrors the repository with docs/ at its top: a hand-written page links a
repository file by its repository path (`figures/headline.png`, `benchmarks/results/methods.md`), and the files
other than pages that it links to are added the same way.

The format list is `deltarank.io.file_formats.FORMATS`, the one `tests/test_file_formats.py` holds the package to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from deltarank.cli import SUBCOMMANDS
from deltarank.docsite.pages import default_pages
from deltarank.io.file_formats import FORMATS

COMMANDS_PAGE = "commands/index.md"
RESULTS_PAGE = "results.md"
REPORTS = ("benchmarks/results/*.md", "benchmarks/results/studies/*/report.md")
# A relative Markdown link or image target: ](path) without a scheme or an anchor-only target.
LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#)([^)\s#]+)")


def repository(config: MkDocsConfig) -> Path:
    """The repository root: the folder of mkdocs.yml."""
    return Path(str(config.config_file_path)).resolve().parent


def reports(root: Path) -> list[Path]:
    """The benchmark and study reports under `benchmarks/results/`, relative to the repository."""
    found = [path for pattern in REPORTS for path in sorted(root.glob(pattern))]
    return [path.relative_to(root) for path in found]


def report_title(path: Path) -> str:
    """A report's first heading (or its path without one)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return str(path.parent.name if path.name == "report.md" else path.stem)


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Expand the nav entries of the commands and the results into their pages."""
    root = repository(config)
    commands = [COMMANDS_PAGE, *({f"deltarank {n}": f"commands/{n}.md"} for n in SUBCOMMANDS)]
    results = [RESULTS_PAGE, *({report_title(root / p): p.as_posix()} for p in reports(root))]
    config.nav = [
        _expand(entry, {COMMANDS_PAGE: commands, RESULTS_PAGE: results}) for entry in config.nav or []
    ]
    return config


def _expand(entry: Any, sections: dict[str, list[Any]]) -> Any:
    if isinstance(entry, dict):
        return {title: _expand(value, sections) for title, value in entry.items()}
    if isinstance(entry, list):
        return [_expand(value, sections) for value in entry]
    return sections.get(entry, entry)


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the generated pages, the reports and the files the reports link to."""
    root = repository(config)
    for path, text in default_pages(FORMATS).items():
        files.append(File.generated(config, path, content=text))
    listed = reports(root)
    files.append(File.generated(config, RESULTS_PAGE, content=results_page(root, listed)))
    for report in listed:
        files.append(File.generated(config, report.as_posix(), abs_src_path=str(root / report)))
    docs = Path(str(config.docs_dir))
    pages = [(page.relative_to(docs), page) for page in sorted(docs.rglob("*.md"))]
    linked = {t for report in listed for t in linked_files(root, report)}
    linked |= {t for site_path, page in pages for t in linked_files(root, site_path, page)}
    for target in sorted(linked):
        if files.get_file_from_path(target.as_posix()) is None:
            files.append(File.generated(config, target.as_posix(), abs_src_path=str(root / target)))
    return files


def linked_files(root: Path, report: Path, source: Path | None = None) -> list[Path]:
    """The files other than Markdown pages that a page served at `report` (its path in the site, which mirrors
    the repository) links to, inside the repository, relative to it; `source`: where its text is read, if not
    at that path in the repository (a hand-written page of docs/)."""
    found = []
    for target in LINK.findall((source or root / report).read_text(encoding="utf-8")):
        path = (root / report.parent / target).resolve()
        if path.suffix != ".md" and path.is_file() and path.is_relative_to(root):
            found.append(path.relative_to(root))
    return found


def results_page(root: Path, listed: list[Path]) -> str:
    """The results index: each report with its title, linked where it is served."""
    rows = "\n".join(f"- [{report_title(root / p)}]({p.as_posix()}) (`{p.as_posix()}`)" for p in listed)
    return (
        "# Results and benchmarks\n\nThe measurements behind the numbers of these pages and the README, as the benchmark scripts "
        "wrote them (`benchmarks/results/`, shown here unchanged; `make bench` and the scripts named in each "
        "report regenerate them), and the reports of the reference studies.\n\n" + rows + "\n"
    )
