"""The README and the scripts agree: every "§N" the scripts cite has a heading in "The math,
section by section" (e.g. `### §4.2 Generalized advantage estimation`), and the landmark table of
"How the scripts read" gives the lines the scripts have."""

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


LANDMARKS = {  # the README's row -> how the line starts in the scripts
    "`class Agent`": "class Agent",
    "`def compute_gae` (GAE)": "def compute_gae",
    "`def clipped_surrogate_loss`": "def clipped_surrogate_loss",
    "`for iteration ...` (the loop)": "        for iteration in",
    "`# §9.1 phase 3` (the update)": "            # §9.1 phase 3",
    "Part 2 banner": "# ------",
}


def test_the_readme_landmark_table_gives_the_scripts_lines():
    readme = (ROOT / "README.md").read_text()
    table_text = readme[readme.index("| landmark (first line)") :].split("\n\n")[0]
    rows = re.findall(r"^\| (.+?) \| (\d+) \| (\d+) \|$", table_text, re.MULTILINE)
    table = {row: (int(continuous), int(discrete)) for row, continuous, discrete in rows}
    assert table.keys() == LANDMARKS.keys()
    for column, script in enumerate(SCRIPTS):
        lines = (ROOT / script).read_text().splitlines()
        for row, start in LANDMARKS.items():
            first = next(number for number, line in enumerate(lines, 1) if line.startswith(start))
            assert table[row][column] == first, (script, row)
