"""Checks that the documentation cannot drift from the CLI: every documented ``rdd-edge`` command names a verb
that exists and only options of that verb, and every relative link resolves.

The CLI side comes from typer's own parameter lists (``typer.main.get_command(app)``), not from ``--help`` text, so
a renamed or removed option fails here the day it changes. Commands are read from fenced code blocks (``bash``,
``text``, untagged ...; not ``python``/``json``-like blocks) and from inline code spans that begin with
``rdd-edge``. A literal ``...`` stands for elided arguments and is skipped; upper-case placeholders (``PATH``,
``N``) are values like any other.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
NOT_SHELL = {"python", "py", "json", "yaml", "yml", "toml", "ini", "diff", "csv"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
SEPARATORS = {"&&", "||", "|", ";", "&", "(", ")", ">", ">>", "<", "2>", "2>&1", ">&"}


@dataclass(frozen=True)
class Command:
    """One documented command line: where it is and its words after the program name."""

    file: str
    line: int
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: rdd-edge {' '.join(self.args)}"


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every page of the guide."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_markdown(text: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """(code lines as (line number, block language, text), prose lines as (line number, text)); a backslash at
    the end of a code line joins the next one to it (shell continuation)."""
    code: list[tuple[int, str, str]] = []
    prose: list[tuple[int, str]] = []
    fence: str | None = None
    lang = ""
    pending: tuple[int, str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang = m.group(1), m.group(2).lower()
            continue
        if fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            fence, pending = None, None
            continue
        if fence is None:
            prose.append((n, line))
            continue
        start, joined = pending if pending else (n, "")
        joined += line
        if joined.endswith("\\"):
            pending = (start, joined[:-1] + " ")
            continue
        pending = None
        code.append((start, lang, joined))
    return code, prose


def _commands_in_tokens(tokens: list[str], file: str, line: int) -> Iterator[Command]:
    """The rdd-edge commands among shell tokens: program ``rdd-edge`` (any path) or ``python -m rdd_edge``, up to
    the next separator; a quoted word holding a command (``ssh host 'rdd-edge check'``) is read as a line too."""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        start = None
        if tok.rsplit("/", 1)[-1] == "rdd-edge":
            start = i + 1
        elif tok == "-m" and i + 1 < len(tokens) and tokens[i + 1] == "rdd_edge":
            start = i + 2
        elif " " in tok and "rdd-edge" in tok:
            yield from commands_in_line(tok, file, line)
        if start is None:
            i += 1
            continue
        end = start
        while end < len(tokens) and tokens[end] not in SEPARATORS:
            end += 1
        yield Command(file, line, tuple(t for t in tokens[start:end] if t != "..."))
        i = end


def commands_in_line(text: str, file: str, line: int) -> Iterator[Command]:
    """Every rdd-edge command on one shell line (comments dropped); a line that is not valid shell is an error
    only when it mentions rdd-edge."""
    if "rdd-edge" not in text and "rdd_edge" not in text:
        return
    text = re.sub(r"^\s*\$\s+", "", text)  # a prompt
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ValueError(f"{file}:{line}: not a shell line ({exc}): {text.strip()}") from None
    yield from _commands_in_tokens(tokens, file, line)


def documented_commands(path: Path, root: Path = ROOT) -> list[Command]:
    """The rdd-edge commands of a markdown file: code blocks, and inline spans that begin with ``rdd-edge``."""
    name = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    code, prose = split_markdown(path.read_text(encoding="utf-8"))
    found: list[Command] = []
    for n, lang, text in code:
        if lang not in NOT_SHELL:
            found += commands_in_line(text, name, n)
    for n, text in prose:
        for m in INLINE_CODE.finditer(text):
            span = m.group(2).strip()
            if span.startswith("rdd-edge ") or span == "rdd-edge":
                found += commands_in_line(span, name, n)
    return found


def _option_table(cmd: Any, help_names: list[str]) -> dict[str, Any]:
    table = {name: None for name in help_names}
    for p in cmd.params:
        if p.param_type_name == "option":
            for name in [*p.opts, *p.secondary_opts]:
                table[name] = p
    return table


def _takes_value(param: Any) -> bool:
    return param is not None and not getattr(param, "is_flag", False) and not getattr(param, "count", False)


def check_command(root_cmd: Any, command: Command) -> list[str]:
    """Problems of one documented command against the CLI: unknown verb, unknown option, a value given to a flag,
    an option missing its value, more positional arguments than the verb takes."""
    help_names = list((root_cmd.context_settings or {}).get("help_option_names", ["--help"]))
    args = list(command.args)
    cmd, path = root_cmd, ["rdd-edge"]
    while hasattr(cmd, "commands"):  # a group: its options, then the verb
        options = _option_table(cmd, help_names)
        while args and args[0].startswith("-"):
            name = args.pop(0).split("=", 1)[0]
            if name not in options:
                return [f"{command}: `{' '.join(path)}` has no option {name}"]
            if name in help_names:
                return []
        if not args:
            return []  # `rdd-edge` or `rdd-edge data` alone: prints the help
        verb = args.pop(0)
        if verb not in cmd.commands:
            known = ", ".join(sorted(cmd.commands))
            return [f"{command}: `{' '.join(path)}` has no command {verb!r} (it has: {known})"]
        cmd = cmd.commands[verb]
        path.append(verb)
    options = _option_table(cmd, help_names)
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    room = sum(10**6 if p.nargs < 0 else p.nargs for p in arguments)
    problems, positional, only_args = [], [], False
    while args:
        tok = args.pop(0)
        if only_args or not tok.startswith("-") or tok == "-" or re.fullmatch(r"-\d[\d.]*", tok):
            positional.append(tok)
            continue
        if tok == "--":
            only_args = True
            continue
        name, eq, value = tok.partition("=")
        if name not in options:
            problems.append(f"{command}: `{' '.join(path)}` has no option {name}")
            continue
        param = options[name]
        if not _takes_value(param):
            if eq:
                problems.append(f"{command}: {name} is a flag and takes no value")
            continue
        values = [value] if eq else []
        while len(values) < max(param.nargs, 1) and args:
            values.append(args.pop(0))
        if len(values) < max(param.nargs, 1):
            problems.append(f"{command}: {name} needs a value")
            continue
    if len(positional) > room:
        problems.append(f"{command}: `{' '.join(path)}` takes {room} positional argument(s), "
                        f"the doc gives {len(positional)}: {' '.join(positional)}")
    return problems


def broken_links(path: Path) -> list[str]:
    """Relative links of a markdown file (outside code) whose file, or heading anchor in a markdown file, is
    missing."""
    code, prose = split_markdown(path.read_text(encoding="utf-8"))
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    problems = []
    for n, line in prose:
        line = INLINE_CODE.sub("", line)
        targets = [m.group(1) for m in LINK.finditer(line)]
        ref = REF_DEF.match(line)
        if ref:
            targets.append(ref.group(1))
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{name}:{n}: link to {target}: no such file {dest}")
            elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
                problems.append(f"{name}:{n}: link to {target}: {dest.name} has no heading #{anchor}")
    return problems


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to hyphens,
    repeats numbered."""
    code, prose = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in prose:
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors
