"""The project's Markdown: every relative link leads somewhere (the file exists and, for
`file#anchor` or `#anchor`, a heading in it has that GitHub anchor), README is a short user's guide
that starts with the two commands, and docs/ stays small."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("emotion_recognition/default_model/*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # '#' lines in code blocks are not headings
    return {github_anchor(m) for m in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def test_github_anchor_matches_githubs_rules():
    assert github_anchor("Changing params and comparing runs (`dvc exp`)") == "changing-params-and-comparing-runs-dvc-exp"
    assert github_anchor("1. Put a model into BentoML's model store (the import step)") == \
        "1-put-a-model-into-bentomls-model-store-the-import-step"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def test_readme_is_a_short_users_guide_that_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 14 * 1024, f"README.md is {len(readme.encode()):,} bytes, over 14 KB"
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("make serve") and "http://localhost:3000/ui/" in first_block
    assert first_block.splitlines()[1].startswith("make test")
    assert readme.index("make serve") < readme.index("## ")  # before any section


def test_docs_stay_small():
    sizes = {path.name: len(path.read_bytes()) for path in (ROOT / "docs").glob("*.md")}
    # 30 KB until the security model, the OpenVINO engines, the page and batch on Ray were documented
    assert sum(sizes.values()) <= 34 * 1024, f"docs/ holds {sum(sizes.values()):,} bytes, over 34 KB: {sizes}"
