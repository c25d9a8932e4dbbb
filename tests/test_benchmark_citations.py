"""Every figure the code and the docs cite by section can be found: a citation
``docs/benchmarks/PAGE.md "Heading"`` names a page that exists and a section of it (``##`` or
``###``, or a paragraph's bold lead) whose heading holds the cited words, and nothing cites a
section of BENCHMARKS.md, which holds one table of current figures and no sections of history."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r'(BENCHMARKS\.md|docs/benchmarks/([\w-]+)\.md)\s*\(?\s*"([^"]+)"', re.S)


def _words(text: str) -> str:
    """The cited words without line breaks and the comment markers a wrapped citation has."""
    return " ".join(w for w in text.split() if w not in {"#", "//"})


def _tracked_texts() -> list[Path]:
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.split()
            if name.endswith((".py", ".sh", ".md", ".toml"))
            and not name.startswith("docs/benchmarks/")
            and name not in {"BENCHMARKS.md", "tests/test_benchmark_citations.py"}
            and (ROOT / name).is_file()]


def _headings(page: Path) -> list[str]:
    """The page's section headings and bold paragraph leads, lower case."""
    return [_words(line.lstrip("#*")).lower() for line in page.read_text().splitlines()
            if line.startswith(("## ", "### ", "**"))]


def test_every_cited_section_exists() -> None:
    missing = []
    for path in _tracked_texts():
        for match in CITATION.finditer(path.read_text(errors="replace")):
            whole, page, cited = match.groups()
            where = f"{path.relative_to(ROOT)}: {whole} \"{_words(cited)}\""
            if page is None:
                missing.append(f"{where} (BENCHMARKS.md has no history sections)")
                continue
            target = ROOT / "docs" / "benchmarks" / f"{page}.md"
            words = _words(cited).lower()
            if not target.is_file() or not any(words in h for h in _headings(target)):
                missing.append(where)
    assert not missing, "citations of sections that do not exist:\n" + "\n".join(missing)


def test_the_current_table_links_only_pages_that_exist() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    links = re.findall(r"\]\((docs/benchmarks/[\w-]+\.md)\)", text)
    assert links, "BENCHMARKS.md links no history page"
    assert all((ROOT / link).is_file() for link in links), links
