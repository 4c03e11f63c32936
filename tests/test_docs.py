"""The README and docs/: relative links resolve, and every generated-table marker that a
scripts/reproduce_*.py writes between is where that script's documented --readme points."""

import glob
import os
import re

import pytest

from conftest import REPO

PAGES = [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_resolve(page):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
        assert os.path.exists(path), f"{os.path.relpath(page, REPO)} links to missing {target}"


@pytest.mark.parametrize("script", sorted(glob.glob(os.path.join(REPO, "scripts",
                                                                   "reproduce_*.py"))),
                         ids=os.path.basename)
def test_generated_table_markers_are_where_the_scripts_write(script):
    with open(script, encoding="utf-8") as f:
        source = f.read()
    markers = re.search(r'BEGIN, END = "([^"]+)", "([^"]+)"', source)
    target = re.search(r"--readme (\S+)", source)
    assert markers and target, f"{script}: no markers or documented --readme"
    with open(os.path.join(REPO, target.group(1)), encoding="utf-8") as f:
        text = f.read()
    begin, end = markers.groups()
    assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
