"""Runbooks as code: parse the markdown runbooks in ``runbooks/`` and check them.

A runbook is a markdown file that starts with front matter::

    ---
    destructive: true            # true if it runs `cleanup execute` (not --dry-run) or `purge`
    owner: alice                 # who keeps it up to date
    reviewed_by: bob             # who reviewed it (comma-separated; not only the owner)
    last_reviewed: 2026-05-14    # ISO date of that review
    ---

(simple ``key: value`` lines; no YAML library). Its commands are in fenced blocks
whose info string starts with ``console``: a line starting with ``$ `` is a
command (a trailing ``\\`` continues it on the next line), a line
``# expect exit N`` directly before a command says the command is expected to
exit N (for a documented refusal), any other line is example output.

:func:`check_paths` returns :class:`Finding` s (file, line, message). A runbook
fails when

- its front matter is missing or malformed, or a destructive runbook has no
  ``owner``, ``reviewed_by`` (someone other than the owner: a destructive
  runbook needs a second person, as a plan does, I7) or ``last_reviewed`` (an
  ISO date, not in the future, optionally not older than ``max_review_age``);
- it says ``destructive: false`` but runs ``cleanup execute`` (without
  ``--dry-run``) or ``cleanup purge``;
- a ``cleanup`` command is not a valid invocation of the real click command
  tree: unknown subcommand, unknown option, missing required option or
  argument, a value of the wrong type (``--stage x``, ``--buffer 1y``), or
  ``--help``/``--version`` (which print and exit instead of doing the step);
- any fenced block holds a raw deletion outside the tool (``aws s3 rm``,
  ``aws s3api delete-object(s)``, ``s5cmd rm``, ``gsutil rm``, ``gcloud storage
  rm``, ``rclone delete|purge``, ``mc rm``, ``rm`` as a command, ``rm -r``,
  ``find -delete``, ``DELETE FROM``, ``TRUNCATE TABLE``) — also in comments and
  example output: a runbook never shows one;
- commands sit in a ``bash``/``sh``/``shell`` block instead of a ``console``
  block (they would be neither checked nor run by the tests).

Shell variables (``"$STORE"``, ``${PLAN}``, ``$(...)``) are placeholders: they
are kept literally for the check, so they can stand for paths and strings but
not for typed values (``--stage 0``, ``--buffer 24h`` are written out). Path
and file parameters are checked as strings: whether a file exists is a matter
for the run, not for the runbook. Tokenizing follows POSIX shell quoting
(:mod:`shlex`); pipes, ``&&``, ``;`` and redirections split a line into
commands, each checked on its own. ``README.md`` files are documentation and are
not checked as runbooks.

Nothing here executes a command: :meth:`click.Command.make_context` only parses
and converts values, it never invokes the command. The only parameter callbacks
in the tree, eager ``--help``/``--version`` (which print and exit), are refused
before parsing, and Path/File types are swapped for plain strings so that no
file is opened or looked at.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

FRONT_MATTER_KEYS = ("destructive", "owner", "reviewed_by", "last_reviewed", "title")
REVIEW_KEYS = ("owner", "reviewed_by", "last_reviewed")
CONSOLE = "console"
SHELL_INFOS = frozenset({"bash", "sh", "shell", "zsh", "shell-session"})
EXPECT_RE = re.compile(r"^#\s*expect\s+exit\s+(\d+)\s*$", re.IGNORECASE)
FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")

# Raw deletions outside the tool: (pattern, what to call it). Case-insensitive.
RAW_DELETIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), name) for p, name in (
        (r"\baws\s+(?:--\S+\s+(?:[^-\s]\S*\s+)?)*s3\s+rm\b", "aws s3 rm"),
        (r"\baws\s+(?:--\S+\s+(?:[^-\s]\S*\s+)?)*s3api\s+delete-objects?\b",
         "aws s3api delete-object"),
        (r"\bs5cmd\b.*\s(?:rm|delete)\b", "s5cmd rm"),
        (r"\bgsutil\b.*\srm\b", "gsutil rm"),
        (r"\bgcloud\s+storage\s+rm\b", "gcloud storage rm"),
        (r"\brclone\s+(?:delete|deletefile|purge|rmdirs)\b", "rclone delete"),
        (r"\bmc\s+rm\b", "mc rm"),
        (r"(?<![\w-])rm\s+(?:-\w*[rR]\w*|--recursive)\b", "rm -r"),
        (r"(?:^|[;&|(`{]|\bxargs(?:\s+-\S+)*|\bsudo|\bexec|\bthen|\bdo)\s*rm(?:\s|$)", "rm"),
        (r"\bfind\b.*\s-delete\b", "find -delete"),
        (r"\bdelete\s+from\b", "DELETE FROM"),
        (r"\btruncate\s+table\b", "TRUNCATE TABLE"),
    ))

# `cleanup` commands that remove files: a runbook running one is destructive.
DESTRUCTIVE_COMMANDS = (("execute",), ("purge",))


@dataclass(frozen=True)
class Finding:
    """One problem: where it is and what is wrong."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class Command:
    """A ``$ `` line of a console block (continuations joined)."""

    line: int
    text: str
    expect: int = 0


@dataclass(frozen=True)
class Block:
    """A fenced code block: its info string and its lines (number, text)."""

    line: int
    info: str
    lines: tuple[tuple[int, str], ...]

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""


@dataclass
class Runbook:
    path: Path
    front: dict[str, str] = field(default_factory=dict)
    front_lines: dict[str, int] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    has_front: bool = False

    @property
    def destructive(self) -> bool:
        return self.front.get("destructive", "").lower() == "true"

    @property
    def title(self) -> str:
        if self.front.get("title"):
            return self.front["title"]
        for ln in self.path.read_text(encoding="utf-8").splitlines():
            if ln.startswith("# "):
                return ln[2:].strip()
        return self.path.stem

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "title": self.title, "destructive": self.destructive,
                **{k: self.front.get(k) for k in REVIEW_KEYS},
                "commands": len(self.commands)}


@dataclass
class CheckReport:
    runbooks: list[Runbook]
    findings: list[Finding]
    cleanup_commands: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "runbooks": [r.to_json() for r in self.runbooks],
                "cleanup_commands": self.cleanup_commands,
                "findings": [f.to_json() for f in self.findings]}


# --- parsing -------------------------------------------------------------------------------


def parse_runbook(path: Path) -> tuple[Runbook, list[Finding]]:
    """Read front matter, fenced blocks and console commands; syntax problems are findings."""
    rb = Runbook(path)
    findings: list[Finding] = []
    where = str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    body_start = _parse_front_matter(rb, lines, findings)
    i = body_start
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
        start = i + 1
        content: list[tuple[int, str]] = []
        i += 1
        closed = False
        while i < len(lines):
            ln = lines[i]
            stripped = ln.lstrip(" ")
            if (len(ln) - len(stripped) <= 3 and stripped.startswith(fence[0] * len(fence))
                    and not stripped.strip(fence[0]).strip()):
                closed = True
                break
            content.append((i + 1, _dedent(ln, indent)))
            i += 1
        if not closed:
            findings.append(Finding(where, start, "code fence is never closed"))
        block = Block(start, info, tuple(content))
        rb.blocks.append(block)
        if block.language == CONSOLE:
            rb.commands += _parse_console(block, where, findings)
        i += 1
    return rb, findings


def _dedent(line: str, indent: int) -> str:
    n = len(line) - len(line.lstrip(" "))
    return line[min(n, indent):]


def _parse_front_matter(rb: Runbook, lines: list[str], findings: list[Finding]) -> int:
    where = str(rb.path)
    if not lines or lines[0].strip() != "---":
        findings.append(Finding(where, 1, "no front matter: the file must start with a `---` "
                                          "block (destructive, owner, reviewed_by, "
                                          "last_reviewed)"))
        return 0
    end = next((n for n in range(1, len(lines)) if lines[n].strip() == "---"), None)
    if end is None:
        findings.append(Finding(where, 1, "front matter is never closed with `---`"))
        return 1
    rb.has_front = True
    for n in range(1, end):
        ln = lines[n].strip()
        if not ln or ln.startswith("#"):
            continue
        key, sep, value = ln.partition(":")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*", key):
            findings.append(Finding(where, n + 1, f"front matter: expected `key: value`, "
                                                  f"got {ln!r}"))
            continue
        if key not in FRONT_MATTER_KEYS:
            findings.append(Finding(where, n + 1, f"front matter: unknown key {key!r} (known: "
                                                  f"{', '.join(FRONT_MATTER_KEYS)})"))
            continue
        value = value.split(" #", 1)[0].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        rb.front[key] = value
        rb.front_lines[key] = n + 1
    return end + 1


def _parse_console(block: Block, where: str, findings: list[Finding]) -> list[Command]:
    out: list[Command] = []
    expect: tuple[int, int] | None = None  # (exit code, line of the annotation)
    lines = list(block.lines)
    k = 0
    while k < len(lines):
        num, text = lines[k]
        k += 1
        m = EXPECT_RE.match(text.strip())
        if m:
            if expect is not None:
                findings.append(Finding(where, expect[1], "`# expect exit` is not followed "
                                                          "by a command"))
            expect = (int(m.group(1)), num)
            continue
        if not text.startswith("$ "):
            if expect is not None:
                findings.append(Finding(where, expect[1], "`# expect exit` is not followed "
                                                          "by a command"))
                expect = None
            continue
        cmd = text[2:].strip()
        while cmd.endswith("\\") and k < len(lines):
            cmd = cmd[:-1].rstrip() + " " + lines[k][1].strip()
            k += 1
        if cmd.endswith("\\"):
            findings.append(Finding(where, num, "command continues (`\\`) past the end of "
                                                "its block"))
            cmd = cmd[:-1].rstrip()
        out.append(Command(num, cmd, expect[0] if expect else 0))
        expect = None
    if expect is not None:
        findings.append(Finding(where, expect[1], "`# expect exit` is not followed by a "
                                                  "command"))
    if not out:
        findings.append(Finding(where, block.line, "console block has no `$ ` command"))
    return out


# --- shell words ---------------------------------------------------------------------------

_OPERATORS = frozenset({"|", "||", "&&", ";", "&", "(", ")", ";;", "|&"})


def split_commands(text: str) -> list[list[str]]:
    """Split a shell line into simple commands (words), dropping redirections and
    leading ``NAME=value`` assignments. Raises ValueError on unbalanced quotes."""
    text = re.sub(r"\$\([^()]*\)", "$SUBST", text)       # $(...) -> a placeholder word
    text = re.sub(r"`[^`]*`", "$SUBST", text)
    text = re.sub(r"(?<!\S)\d+(?=[<>])", "", text)        # 2>&1: the fd number is no word
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out: list[list[str]] = [[]]
    skip_next = False
    for tok in lex:
        if skip_next:  # the target of a redirection
            skip_next = False
        elif tok in _OPERATORS:
            out.append([])
        elif set(tok) <= set("<>&|") and set(tok) & set("<>"):
            skip_next = True  # >, >>, <, <<, >&, &>: drop it and its target
        else:
            out[-1].append(tok)
    words = [_strip_prefix(c) for c in out]
    return [c for c in words if c]


def _strip_prefix(words: list[str]) -> list[str]:
    i = 0
    while i < len(words) and (re.fullmatch(r"[A-Za-z_]\w*=.*", words[i])
                              or words[i] in ("sudo", "env", "time", "exec", "command")):
        i += 1
    return words[i:]


def cleanup_args(words: list[str]) -> list[str] | None:
    """The arguments of a ``cleanup`` invocation (``cleanup``, ``path/to/cleanup``,
    ``python -m cleanup``), or None if ``words`` runs something else."""
    if not words:
        return None
    if words[0].rsplit("/", 1)[-1] == "cleanup":
        return words[1:]
    if (re.fullmatch(r"(?:.*/)?python(?:3(?:\.\d+)?)?", words[0]) and len(words) >= 3
            and words[1:3] == ["-m", "cleanup"]):
        return words[3:]
    return None


def raw_deletions(text: str) -> list[str]:
    """Names of the raw deletions (outside the tool) that ``text`` contains."""
    return [name for pat, name in RAW_DELETIONS if pat.search(text)]


# --- validation against the click tree -------------------------------------------------------


def _as_string(param: click.Parameter) -> click.Parameter:
    """A copy of ``param`` whose Path/File type is a plain string: no filesystem access."""
    if isinstance(param.type, click.Path | click.File):
        p = copy.copy(param)
        p.type = click.STRING
        return p
    return param


def _syntax_only(cmd: click.Command) -> click.Command:
    c = copy.copy(cmd)
    c.params = [_as_string(p) for p in cmd.params]
    return c


def _eager_words(cmd: click.Command, ctx: click.Context) -> set[str]:
    words: set[str] = set()
    for p in cmd.get_params(ctx):
        if isinstance(p, click.Option) and p.is_eager and not p.expose_value:
            words.update(p.opts + p.secondary_opts)
    return words


def validate_invocation(args: Sequence[str], root: click.Command,
                        prog: str = "cleanup") -> tuple[list[str], str | None]:
    """Parse ``prog args`` against the click tree ``root`` without running anything.

    Returns (the resolved command path, e.g. ``["audit", "verify"]``; an error
    message or None)."""
    cmd: click.Command = root
    name = prog
    rest = list(args)
    parent: click.Context | None = None
    path: list[str] = []
    contexts: list[click.Context] = []
    try:
        while True:
            probe = click.Context(cmd, info_name=name, parent=parent, **cmd.context_settings)
            head = rest[:rest.index("--")] if "--" in rest else rest
            if isinstance(cmd, click.Group):  # a group's own options precede its subcommand
                head = head[:next((i for i, w in enumerate(head) if w in cmd.commands),
                                  len(head))]
            eager = sorted(_eager_words(cmd, probe) & set(head))
            if eager:
                return path, (f"`{eager[0]}` prints and exits instead of doing a step: "
                              "not a runbook command")
            if isinstance(cmd, click.Group) and not rest:
                return path, (f"`{' '.join([prog, *path])}` needs a subcommand (one of: "
                              f"{', '.join(sorted(cmd.commands))})")
            try:
                ctx = _syntax_only(cmd).make_context(name, list(rest), parent=parent,
                                                     resilient_parsing=False)
            except click.ClickException as exc:
                return path, exc.format_message()
            except click.exceptions.Exit:
                return path, "the command exits while its arguments are parsed"
            contexts.append(ctx)
            if not isinstance(cmd, click.Group):
                return path, None
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                return path, (f"`{' '.join([prog, *path])}` needs a subcommand (one of: "
                              f"{', '.join(sorted(cmd.commands))})")
            try:
                sub_name, sub, rest = cmd.resolve_command(ctx, rest)
            except click.ClickException as exc:
                return path, exc.format_message()
            if sub is None or sub_name is None:  # pragma: no cover - resolve_command raises
                return path, f"no such command {rest[0]!r}"
            path.append(sub_name)
            cmd, name, parent = sub, sub_name, ctx
    finally:
        for c in reversed(contexts):
            c.close()


def _is_destructive(path: list[str], args: list[str]) -> bool:
    return tuple(path) in DESTRUCTIVE_COMMANDS and not (
        path == ["execute"] and "--dry-run" in args)


# --- checks ----------------------------------------------------------------------------------


def check_front_matter(rb: Runbook, today: date,
                       max_review_age: int | None = None) -> list[Finding]:
    where = str(rb.path)
    out: list[Finding] = []
    if "destructive" not in rb.front:
        if rb.has_front:
            out.append(Finding(where, 1, "front matter must say `destructive: true` or "
                                         "`destructive: false`"))
        return out
    flag = rb.front["destructive"].lower()
    if flag not in ("true", "false"):
        out.append(Finding(where, rb.front_lines["destructive"],
                           f"destructive must be true or false, not {rb.front['destructive']!r}"))
    missing = [k for k in REVIEW_KEYS if not rb.front.get(k, "").strip()]
    if rb.destructive:
        for k in missing:
            out.append(Finding(where, rb.front_lines.get(k, 1),
                               f"destructive runbook has no {k}: a runbook that removes files "
                               "needs owner, reviewed_by and last_reviewed"))
        owner = rb.front.get("owner", "").strip()
        reviewers = [r.strip() for r in rb.front.get("reviewed_by", "").split(",") if r.strip()]
        if owner and reviewers and all(r == owner for r in reviewers):
            out.append(Finding(where, rb.front_lines["reviewed_by"],
                               f"destructive runbook reviewed only by its owner {owner!r}: "
                               "reviewed_by must name someone else (two-person rule, I7)"))
    raw = rb.front.get("last_reviewed", "").strip()
    if raw:
        line = rb.front_lines["last_reviewed"]
        try:
            reviewed = date.fromisoformat(raw)
        except ValueError:
            out.append(Finding(where, line, f"last_reviewed {raw!r} is not an ISO date "
                                            "(YYYY-MM-DD)"))
        else:
            if reviewed > today:
                out.append(Finding(where, line, f"last_reviewed {raw} is in the future "
                                                f"(today is {today.isoformat()})"))
            elif max_review_age is not None and (today - reviewed).days > max_review_age:
                out.append(Finding(where, line, f"last_reviewed {raw} is "
                                                f"{(today - reviewed).days} days ago, more "
                                                f"than {max_review_age}: review it again"))
    return out


def check_runbook(rb: Runbook, root: click.Command, today: date,
                  max_review_age: int | None = None) -> tuple[list[Finding], int]:
    """All findings for one parsed runbook, and how many cleanup commands it has."""
    where = str(rb.path)
    out = check_front_matter(rb, today, max_review_age)
    for block in rb.blocks:
        for num, text in block.lines:
            body = text[2:] if text.startswith("$ ") else text
            for name in raw_deletions(body)[:1]:  # the most specific name, once a line
                out.append(Finding(where, num, f"raw deletion outside the tool ({name}): "
                                               "files are removed only by `cleanup execute` "
                                               "of a signed plan, and `cleanup purge`"))
        if block.language in SHELL_INFOS and any(
                t.startswith("$ ") or cleanup_args(t.split()) is not None
                for _n, t in block.lines):
            out.append(Finding(where, block.line, f"commands in a `{block.language}` block: "
                                                  "put them in a ```console block, where they "
                                                  "are checked and tested"))
    n_cleanup = 0
    for c in rb.commands:
        try:
            commands = split_commands(c.text)
        except ValueError as exc:
            out.append(Finding(where, c.line, f"cannot split the command into words: {exc}"))
            continue
        for words in commands:
            args = cleanup_args(words)
            if args is None:
                continue
            n_cleanup += 1
            path, err = validate_invocation(args, root)
            shown = " ".join(["cleanup", *path])
            if err is not None:
                out.append(Finding(where, c.line, f"not a valid `{shown}` invocation: "
                                                  f"{err}"))
            elif _is_destructive(path, args) and not rb.destructive:
                out.append(Finding(where, c.line, f"`{shown}` removes files but the runbook "
                                                  "says destructive: false"))
    return out, n_cleanup


def find_runbooks(paths: Iterable[str | Path]) -> list[Path]:
    """Markdown files under ``paths`` (files or directories), in file-name order.
    README.md files are documentation, not runbooks."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.glob("*.md")
                            if f.is_file() and f.name.lower() != "readme.md")
        else:
            found.append(p)
    return found


def check_paths(paths: Iterable[str | Path], root: click.Command, *,
                today: date | None = None, max_review_age: int | None = None) -> CheckReport:
    """Check every runbook under ``paths`` against the click tree ``root`` (the CLI
    passes its own root command: the library never imports the CLI)."""
    today = today or datetime.now(UTC).date()
    report = CheckReport([], [])
    names = [str(p) for p in paths]
    files = find_runbooks(names)
    if not files:
        report.findings.append(Finding(", ".join(names), 0, "no runbooks (*.md) to check"))
    for f in files:
        rb, findings = parse_runbook(f)
        more, n = check_runbook(rb, root, today, max_review_age)
        report.runbooks.append(rb)
        report.findings += findings + more
        report.cleanup_commands += n
    report.findings.sort(key=lambda x: (x.path, x.line))
    return report


def load_runbooks(paths: Iterable[str | Path]) -> list[Runbook]:
    """Parsed runbooks in the order they are meant to run (file name)."""
    return [parse_runbook(f)[0] for f in find_runbooks(paths)]
