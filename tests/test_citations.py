"""Docstrings and messages in the package cite papers and reference repositories, never files a
user of the package does not have (the project's spec files, issue numbers)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"methods\.md|reference-results\.md|specs/|\bspec (§|section)|§ ?\d+ of the spec"
                       r"|\bthe spec\b|\b[Ii]ssue ?#?\d+|\(#\d+\)")


def find_citations(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line citing a project-internal source."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if FORBIDDEN.search(line)]


def test_package_cites_no_internal_files_or_issues():
    found = [f"{p.relative_to(ROOT)}:{i}: {line}" for p in sorted((ROOT / "jaxdd").rglob("*.py"))
             for i, line in find_citations(p.read_text())]
    assert not found, ("cite the paper (authors, venue or arXiv id) and the reference repository instead:\n"
                       + "\n".join(found))


def test_the_check_catches_each_form():
    bad = ['"""Scores (methods.md §1)."""', "# see spec §4", "the spec uses 0.1", "(spec section 4)",
           "fixed in issue 15", "see issue #18", "as agreed (#12)", "``shared/specs/methods.md`` §3"]
    assert [len(find_citations(b)) for b in bad] == [1] * len(bad)
    good = ['"""DGS (Li et al., arXiv 2601.10090)."""', "spec = method_spec(name)", "PartitionSpec(None, 'data')",
            "the spectrum", "specs = []"]
    assert [find_citations(g) for g in good] == [[]] * len(good)
