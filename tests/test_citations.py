"""The README and the scripts agree: every "§N" the scripts cite has a heading in "The math,
section by section" (e.g. `### §4.2 Generalized advantage estimation`), and the landmark table of
"How the scripts read" names their definitions in order."""

import difflib
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


def test_the_readme_landmarks_are_the_scripts_in_their_order():
    """The README's table of landmarks ("How the scripts read") names the scripts' definitions in
    the order a reader meets them: each is in both scripts, in that order (names, not lines)."""
    readme = (ROOT / "README.md").read_text()
    table_text = readme[readme.index("| landmark |") :].split("\n\n")[0]
    landmarks = re.findall(r"^\| `([^`]+)` \|", table_text, re.MULTILINE)
    assert len(landmarks) > 8
    for script in SCRIPTS:
        text = (ROOT / script).read_text()
        found = [re.search(rf"^ *{re.escape(name)}", text, re.MULTILINE) for name in landmarks]
        assert None not in found, (script, landmarks[found.index(None)])
        starts = [match.start() for match in found]
        assert starts == sorted(starts), script


def test_the_readme_counts_the_lines_that_differ_between_the_scripts():
    """The README's count of the lines `diff ppo_discrete.py ppo_continuous.py` shows, as it is."""
    continuous, discrete = ((ROOT / script).read_text().splitlines() for script in sorted(SCRIPTS))
    changed = [
        line
        for line in difflib.unified_diff(continuous, discrete, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    counts = re.findall(
        r"shows only what really differs \((\d+) lines\)", (ROOT / "README.md").read_text()
    )
    assert counts == [str(len(changed))]
