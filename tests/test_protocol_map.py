"""docs/PROTOCOL_MAP.md names code by file and function, and those names exist.

Line numbers went stale with every edit; names stay true until the code they name is renamed
or removed, and then this test says which entry to update.
"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "docs" / "PROTOCOL_MAP.md"
IDENTIFIER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?")


def source_file(name: str) -> Path:
    """`engine.py`, `generation/run.py`, `bas/tokens.py` -> the one file under bas/ it means."""
    found = [p for p in (REPO / "bas").rglob(Path(name).name)
             if p.relative_to(REPO).as_posix().endswith(name.removeprefix("bas/"))]
    assert len(found) == 1, f"PROTOCOL_MAP.md names {name!r}: {len(found)} files match"
    return found[0]


def defines(text: str, name: str) -> bool:
    """A def, class, module constant, field or import of `name` (`Class.method`: both)."""
    if "." in name:
        owner, member = name.split(".")
        return defines(text, owner) and defines(text, member)
    patterns = (rf"^\s*(async\s+)?(def|class)\s+{name}\b", rf"^\s*{name}\s*(:[^=\n]*)?=", rf"^\s*{name}\s*:",
                rf"^\s*(from\s+\S+\s+)?import\s.*\b{name}\b")
    return any(re.search(p, text, re.MULTILINE) for p in patterns)


def cited_names() -> list[tuple[str, str]]:
    """(file, name) for each `name` that follows a `file.py` in the same table cell or line."""
    pairs = []
    for line in MAP.read_text().splitlines():
        for cell in line.split("|"):
            current = None
            for token in re.findall(r"`([^`]+)`", cell):
                if token.endswith(".py"):
                    current = token
                elif current and IDENTIFIER.fullmatch(token):
                    pairs.append((current, token))
    return pairs


def test_the_map_cites_no_line_numbers():
    assert not re.findall(r"\.py:\d+|`:\d+`", MAP.read_text())


def test_every_function_the_map_names_exists():
    pairs = cited_names()
    assert len(pairs) > 50                     # the map does name code (the parser found it)
    missing = [(f, n) for f, n in pairs if not defines(source_file(f).read_text(), n)]
    assert not missing, missing
