"""The README and the guide in docs/ against the CLI: every documented `rdd-edge ...` command names a verb that
exists and only that verb's options (typer's own parameter lists), and every relative link resolves."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from doc_commands import ROOT, Command, broken_links, check_command, doc_files, documented_commands
from rdd_edge.cli import app

CLI = typer.main.get_command(app)


def _check_text(tmp_path: Path, text: str) -> list[str]:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return [p for c in documented_commands(page, tmp_path) for p in check_command(CLI, c)]


def test_the_guide_has_pages_and_the_readme_links_them():
    pages = doc_files()[1:]
    assert len(pages) >= 8, pages
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in pages:
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
        first = [line for line in page.read_text(encoding="utf-8").splitlines()[1:] if line.strip()][0]
        assert first.startswith("What this page is for"), f"{page.name}: {first}"


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: p.name)
def test_every_documented_command_is_the_cli(page):
    commands = documented_commands(page)
    problems = [p for c in commands for p in check_command(CLI, c)]
    assert not problems, "\n".join(problems)


def test_the_docs_document_every_verb():
    """Each verb of the CLI appears in at least one documented command (a new verb gets its docs)."""
    used = {c.args[0] for page in doc_files() for c in documented_commands(page) if c.args}
    used |= {f"data {c.args[1]}" for page in doc_files() for c in documented_commands(page)
             if len(c.args) > 1 and c.args[0] == "data"}
    verbs = {v for v in CLI.commands if v != "data"} | {f"data {v}" for v in CLI.commands["data"].commands}
    assert verbs <= used, f"verbs without a documented command: {sorted(verbs - used)}"


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_a_made_up_option_or_verb_is_caught(tmp_path):
    text = """
```bash
rdd-edge export --fp16 --int8 --made-up 3                 # not an option of export
rdd-edge data check /data --dataset camvid --fast         # nor of data check
rdd-edge data chek /data                                  # no such sub-command
rdd-edge distil --student mbv2                            # no such verb
ssh jetson 'rdd-bundle/.venv/bin/rdd-edge check --gpu'    # inside a quoted remote command
rdd-edge export RUN --fp16 true                           # a flag given a value: an extra positional argument
rdd-edge check --max-drop                                 # an option without its value
```
and inline: `rdd-edge models --classes 19 --sizes`
"""
    problems = _check_text(tmp_path, text)
    expected = ["has no option --made-up", "has no option --fast", "has no command 'chek'", "has no command 'distil'",
                "has no option --gpu", "the doc gives 2: RUN true", "--max-drop needs a value", "has no option --sizes"]
    for e in expected:
        assert any(e in p for p in problems), (e, problems)
    assert len(problems) == len(expected), problems


def test_real_commands_pass(tmp_path):
    text = """
```bash
rdd-edge --debug export runs/distill-run --int8 --int8-loo -1 --trt=all --size 360x480   # a comment --nope
rdd-edge train-teacher --data /data/camvid \\
    --set weight_decay=5e-4 --no-amp -q
torchrun --nproc-per-node 2 -m rdd_edge distill --student r18 ...
rdd-edge data check /data -f camvid && rdd-edge check --help
```
```python
subprocess.run(["rdd-edge", "export", "--nope"])
```
"""
    assert _check_text(tmp_path, text) == []


def test_a_command_is_named_by_file_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```bash\nrdd-edge check \\\n  --nope\n```\n", encoding="utf-8")
    (command,) = documented_commands(page, tmp_path)
    assert command == Command("page.md", 4, ("check", "--nope"))
    assert check_command(CLI, command) == ["page.md:4: rdd-edge check --nope: `rdd-edge check` has no option --nope"]


def test_broken_links_are_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Some `code` here (1)\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#some-code-here-1) [web](https://x.org/y) [self](#top)\n"
                    "[gone](docs/b.md) [bad anchor](docs/a.md#nothing)\n`[in code](nowhere.md)`\n"
                    "```\n[in a block](nowhere.md)\n```\n# Top\n", encoding="utf-8")
    problems = broken_links(page)
    assert len(problems) == 2 and "docs/b.md" in problems[0] and "#nothing" in problems[1], problems
