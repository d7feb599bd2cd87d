"""The `evolution` command lines of README.md and docs/*.md, as a reader would type them.

A command line is a line of a fenced code block (```bash, ```sh, ```console or a bare ```) that starts with
`evolution ` (after an optional `$ `, environment assignments and `.venv/bin/`). Continuation lines (`\\`) are
joined; a `# comment` is dropped; in a bare block, which is how the README lists commands beside what they do,
the description after a run of two or more spaces is dropped too.

Synopsis notation becomes concrete commands: `a|b` in a word is each alternative; `[...]` is optional (the command
is run without the optional parts, and with all of them when they need nothing the reader must fill in); `…` after
`--reason` is a reason, a trailing `…` is nothing; an upper-case placeholder (DEST, SNAPSHOT_ID …) is filled in from
a table the test gives. What the test cannot run, or runs differently, it must say, line by line, with the reason.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

FENCES = {"", "bash", "sh", "shell", "console"}
COMMAND = re.compile(
    r"^(?:\$ )?(?P<env>(?:[A-Z_][A-Z0-9_]*=\S+\s+)*)(?:\.venv/bin/)?(?P<cmd>evolution(?: .*)?)$"
)
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]*[A-Z]\b|\b[A-Z]\b")
OPTIONAL = re.compile(r"\s*\[[^\[\]]*\]")


@dataclass(frozen=True)
class DocLine:
    path: str  # relative to the repository
    lineno: int
    text: str  # the command as written, without prompt, comment or description

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.text}"


def _logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    start, parts = 0, list[str]()
    for number, line in enumerate(lines, 1):
        if not parts:
            start = number
        stripped = line.strip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        out.append((start, " ".join(p for p in parts if p)))
        parts = []
    if parts:
        out.append((start, " ".join(parts)))
    return out


def _strip_comment(text: str) -> str:
    # A `#` that starts a word outside quotes starts a comment.
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def extract(root: Path) -> list[DocLine]:
    """Every command line of README.md and docs/*.md, in reading order."""
    found: list[DocLine] = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        fence: str | None = None
        block: list[str] = []
        block_start = 0
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                if fence is None:
                    fence, block, block_start = stripped[3:].strip(), [], number
                    continue
                if fence in FENCES:
                    for offset, text in _logical_lines(block):
                        command = _command(text, described=fence == "")
                        if command is not None:
                            found.append(DocLine(str(path.relative_to(root)), block_start + offset, command))
                fence = None
                continue
            if fence is not None:
                block.append(line)
    return found


def _command(text: str, described: bool) -> str | None:
    text = _strip_comment(text)
    if described:
        text = re.split(r"\s{2,}", text, maxsplit=1)[0]
    match = COMMAND.match(text)
    if match is None:
        return None
    return f"{match['env']}{match['cmd']}".strip()


def _words(text: str) -> list[str]:
    return text.split(" ")


def concrete(text: str, placeholders: dict[str, str]) -> list[str] | None:
    """The commands a synopsis stands for, in order; None when a placeholder is not in ``placeholders``."""
    bare = OPTIONAL.sub("", text)
    with_all = re.sub(r"[\[\]]", "", text)
    variants = [bare] if with_all == bare else [bare, with_all]
    out: list[str] = []
    for index, variant in enumerate(variants):
        variant = re.sub(r"(--reason\s+)(\"…\"|…)", r'\1"docs test"', variant)
        variant = re.sub(r"\s+…$", "", variant).replace('"…"', '"docs test"')
        words = [w.split("|") if "|" in w and not w.startswith("-") else [w] for w in _words(variant)]
        for choice in itertools.product(*words):
            command = " ".join(choice)
            unknown = [
                p for p in PLACEHOLDER.findall(_without_env_and_quotes(command)) if p not in placeholders
            ]
            if unknown or "…" in command:
                if index == 1:
                    continue  # the optional parts need the reader's input: the bare form is what runs
                return None
            for name, value in placeholders.items():
                command = re.sub(rf"\b{name}\b", value, command)
            if command not in out:
                out.append(command)
    return out


def _without_env_and_quotes(command: str) -> str:
    words = shlex.split(command)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words.pop(0)
    # Quoted words are free text (a reason), never placeholders.
    return " ".join(w for w in words if " " not in w)
