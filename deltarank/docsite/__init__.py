"""The documentation site's generated pages: command, study file, methods and file format references.

Each page is Markdown made from the code it documents (click commands, dataclass fields and their help, the
method registry, the format list), so the reference cannot drift from the code. `pages.generated_pages` returns
them as text; `mkdocs_hook` adds them to an MkDocs build (`make docs`). Nothing here writes a file.
"""
