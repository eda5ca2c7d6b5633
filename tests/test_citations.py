"""Every "§N" the scripts cite resolves: README.md's "The math, section by section" has a heading
for it (e.g. `### §4.2 Generalized advantage estimation`)."""

import re

import pytest
from conftest import ROOT, SCRIPTS

CITATION = re.compile(r"§(\d+(?:\.\d+)*)")


def readme_sections() -> set[str]:
    headings = re.findall(
        r"^#{2,4} §(\d+(?:\.\d+)*) ", (ROOT / "README.md").read_text(), re.MULTILINE
    )
    return set(headings)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_cited_section_has_a_heading_in_the_readme(script):
    cited = set(CITATION.findall((ROOT / script).read_text()))
    assert len(cited) > 20  # the scripts cite the math throughout
    assert cited <= readme_sections(), cited - readme_sections()


def test_every_readme_section_is_cited_by_the_scripts_or_the_tests():
    """No section for math that nothing implements or checks."""
    files = [ROOT / script for script in SCRIPTS] + sorted((ROOT / "tests").glob("*.py"))
    cited = set().union(*(CITATION.findall(path.read_text()) for path in files))
    assert readme_sections() <= cited, readme_sections() - cited
