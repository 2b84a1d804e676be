"""The documentation: a short front page, a generated flag page, no pointer outside the repository, and links that
resolve. Fast: no model is loaded (the flag check imports the scripts to read their parsers)."""
import glob
import os
import re
import subprocess
import sys

from conftest import ROOT

PAGES = ["README.md", os.path.join("tests", "README.md")] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# written in two pieces so that this file does not contain what it looks for
OUTSIDE = ["../" + "shared", "SPEC" + ".md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def read(relative):
    with open(os.path.join(ROOT, relative), encoding="utf-8") as f:
        return f.read()


def prose_lines(text):
    """The lines outside fenced code blocks, with inline code spans removed."""
    fenced = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield re.sub(r"`[^`]*`", "", line)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(relative):
    seen, result = {}, set()
    fenced = False
    for line in read(relative).split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(relative):
    """(target path relative to the repository root, anchor) for every relative link of a page."""
    for line in prose_lines(read(relative)):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(relative), path)) if path else relative
            yield path, anchor


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the environment and runs
        names = []
        for folder, subfolders, files in os.walk(ROOT):
            subfolders[:] = [s for s in subfolders if not s.startswith(".") and s not in ("runs", "__pycache__")]
            names += [os.path.relpath(os.path.join(folder, name), ROOT) for name in files]
        return names


def test_readme_has_at_most_250_lines():
    lines = read("README.md").count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move the detail into docs/"


def test_flag_page_is_what_flag_table_writes():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "flag_table.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_tracked_file_points_outside_the_repository():
    found = []
    for name in tracked_files():
        path = os.path.join(ROOT, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        found += [f"{name}: {word}" for word in OUTSIDE if word in text]
    assert not found, found


def test_every_relative_link_names_a_file_or_folder_of_the_repository():
    broken = []
    for page in PAGES:
        for path, _ in links(page):
            inside = not os.path.relpath(os.path.join(ROOT, path), ROOT).startswith("..")
            if not inside or not os.path.exists(os.path.join(ROOT, path)):
                broken.append(f"{page}: {path}")
    assert not broken, broken


def test_every_link_anchor_names_a_heading_of_its_page():
    broken = []
    for page in PAGES:
        for path, anchor in links(page):
            if anchor and path.endswith(".md") and os.path.isfile(os.path.join(ROOT, path)):
                if anchor not in anchors(path):
                    broken.append(f"{page}: {path}#{anchor}")
    assert not broken, broken
