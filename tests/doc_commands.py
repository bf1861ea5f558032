"""The commands the README and docs/ show for "after the demo", found and run as a user would.

The convention (the pages are written with it):

- In README.md and docs/*.md, a fenced ```` ```bash ```` block whose line right before the fence is
  exactly ``<!-- after the demo -->`` holds commands that work after ``bash scripts/demo.sh``, typed
  from the clone's root. A marker followed by anything else (a blank line, prose, another
  language's fence) marks nothing; a marker or fence inside another fenced block is text.
- In a block, commands read as bash reads them: a line ending in an unquoted ``\\`` continues on the
  next (joined with one space), a quote left open continues on the next line (joined with a
  newline), ``#`` outside quotes at the start of a word begins a comment (``#`` inside quotes or
  inside a word, as in ``'http://h/#/x'``, is text), blank and comment-only lines are no commands.
- Pages are read README first, then docs/*.md by name. A command already shown (the same text after
  joining and stripping) runs once, where it is first shown; a server command is the exception: a
  block with a command still to run starts its servers again (that command may talk to them).

Running them (``run_blocks``): a server command (``mlflow ui``, ``mlflow server``, ``mlflow models
serve``; a trailing ``&`` or not) starts in its own session on a free port that replaces its port
(``--port N``, else 5000) in the whole block (``127.0.0.1:N``, ``localhost:N``), and must answer
(``/health``, ``/ping`` for ``models serve``) before the next command; a URL in its comment must
answer 200 (fragment dropped). The block's servers are stopped, whole process group, when the block
ends or fails. Any other command runs under bash and must exit 0; a ``curl`` must print JSON without
``error_code``. ``. .venv/bin/activate`` is run as typed too (the caller puts the venv first on PATH
and ``.venv`` in the clone)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tfqa.core.errors import UserError
from tfqa.core.servers import ServerFailed, ServerProcess, free_port
from tfqa.core.servers import http_status as get

MARKER = "<!-- after the demo -->"
FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([\w+-]*)")
WORD_BREAK = " \t;&|()<>"
SERVERS = {("mlflow", "ui"): "/health", ("mlflow", "server"): "/health", ("mlflow", "models", "serve"): "/ping"}
DEFAULT_PORT = 5000
START_TIMEOUT_S = {"/health": 120.0, "/ping": 300.0}  # models serve loads the model before /ping answers
COMMAND_TIMEOUT_S = 1200.0  # train_albert on the CI profile takes minutes
LOCAL_URL = re.compile(r"\b(127\.0\.0\.1|localhost):(\d+)\b")
ANGLE_PLACEHOLDER = re.compile(r"<[^\s<>][^<>]*>")


@dataclass(frozen=True)
class Command:
    text: str
    """What bash runs: continuations joined, the comment stripped."""
    comment: str
    """The comment on its line(s), without ``#`` ("" if none)."""
    page: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def server_path(self) -> str | None:
        """The path a server started by this command answers on when ready; None: not a server."""
        words = self.text.removesuffix("&").split()
        return next((path for prefix, path in SERVERS.items() if tuple(words[: len(prefix)]) == prefix), None)

    def placeholders(self) -> list[str]:
        """Parts a user would have to fill in: ``<run id>`` outside quotes (quoted ``<P>`` is data), ``...``."""
        return ANGLE_PLACEHOLDER.findall(_unquoted(self.text)) + [m for m in ("...", "…") if m in self.text]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """The line of its opening fence."""
    commands: tuple[Command, ...]


def pages(repo: Path) -> list[Path]:
    """README.md first, then docs/*.md by name."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def markers_outside_blocks(page: Path) -> list[int]:
    """Lines of ``page`` holding the marker that marks no ```bash block (a user-facing mistake)."""
    marked = {b.line - 1 for b in page_blocks(page)}
    return [n for n, kind, _ in _lines(page) if kind == "marker" and n not in marked]


def page_blocks(page: Path) -> list[Block]:
    """The marked blocks of one page, in order."""
    found, prev_kind, body = [], None, None
    for n, kind, payload in _lines(page):
        if kind == "open":
            body = (n, payload, prev_kind == "marker", [])  # the marker on the line right before
        elif kind == "text" and body is not None:
            body[3].append((n, payload))
        elif kind == "close" and body is not None:
            start, lang, marked, rows = body
            if marked and lang == "bash":
                found.append(Block(page, start, tuple(parse_commands(rows, page))))
            body = None
        prev_kind = kind
    if body is not None and body[2] and body[1] == "bash":
        raise UserError("a marked ```bash block is never closed", page, body[0])
    return found


def all_blocks(repo: Path) -> list[Block]:
    return [b for page in pages(repo) if page.is_file() for b in page_blocks(page)]


def plan(blocks: list[Block]) -> list[Block]:
    """``blocks`` with each command shown earlier left out (servers excepted, see the module's doc);
    blocks left with nothing new to run are dropped."""
    seen: set[str] = set()
    out = []
    for b in blocks:
        if {c.text for c in b.commands} <= seen:
            continue
        keep = []
        for c in b.commands:
            if c.server_path is not None or c.text not in seen:
                keep.append(c)
            seen.add(c.text)
        out.append(Block(b.page, b.line, tuple(keep)))
    return out


def _lines(page: Path):
    """(line number, kind, payload) for each line: kind "marker", "open" (payload: the fence's
    language), "close", "text" (payload: the line, a fenced block's indent removed) or "prose"."""
    fence: tuple[str, int] | None = None
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = (m.group(2), len(m.group(1)))
                yield n, "open", m.group(3)
            elif line.strip() == MARKER:
                yield n, "marker", None
            else:
                yield n, "prose", None
        elif m and m.group(2)[0] == fence[0][0] and len(m.group(2)) >= len(fence[0]) and not line[m.end() :].strip():
            fence = None
            yield n, "close", None
        else:
            indent = len(line) - len(line.lstrip(" "))
            yield n, "text", line[min(indent, fence[1]) :]


def parse_commands(rows: list[tuple[int, str]], page: Path) -> list[Command]:
    """Bash's reading of a block's lines (numbered as on the page) into commands."""
    commands: list[Command] = []
    buf, comment, start, quote = "", "", None, None
    i = 0
    while i < len(rows):
        n, line = rows[i]
        if buf.endswith(" ") and quote is None:  # the line after a continuation: its indent is layout
            line = line.lstrip()
        if start is None and line.strip():
            start = n
        k = 0
        continued = False
        while k < len(line):
            c = line[k]
            if quote == "'":
                quote = None if c == "'" else quote
                buf += c
            elif quote == '"':
                if c == "\\" and k + 1 < len(line):
                    buf += line[k : k + 2]
                    k += 1
                elif c == '"':
                    quote = None
                    buf += c
                else:
                    buf += c
            elif c == "\\":
                if k + 1 == len(line):
                    continued = True
                else:
                    buf += line[k : k + 2]
                    k += 1
            elif c == "#" and (not buf or buf[-1] in WORD_BREAK):
                comment = (comment + " " + line[k + 1 :].strip()).strip()
                break
            else:
                quote = c if c in "'\"" else None
                buf += c
            k += 1
        i += 1
        if quote is not None:
            buf += "\n"
        elif continued:
            buf = buf.rstrip() + " "
        else:
            if buf.strip():
                commands.append(Command(buf.strip(), comment, page, start))
            buf, comment, start = "", "", None
    if quote is not None or buf.strip():
        what = "a quote is never closed" if quote is not None else "the last line ends with a continuation '\\'"
        raise UserError(f"marked ```bash block: {what}", page, start)
    return commands


def _unquoted(text: str) -> str:
    """``text`` with its quoted parts blanked (to look for placeholders outside data)."""
    return re.sub(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"", "''", text)


@dataclass
class Ran:
    command: Command
    shell: str
    """What ran: the command with its block's ports mapped."""
    result: subprocess.CompletedProcess
    """For a server: its return code after the stop and its log as stdout."""
    seconds: float
    server: bool = False


@dataclass
class _Ports:
    mapping: dict[int, int] = field(default_factory=dict)

    def server_args(self, text: str) -> tuple[str, int]:
        """The server command with its port (given or the default) replaced by a free one."""
        m = re.search(r"--port[ =](\d+)", text)
        port = int(m.group(1)) if m else DEFAULT_PORT
        new = self.mapping.setdefault(port, free_port())
        text = text[: m.start()] + f"--port {new}" + text[m.end() :] if m else f"{text} --port {new}"
        return text, new

    def apply(self, text: str) -> str:
        return LOCAL_URL.sub(lambda m: f"{m.group(1)}:{self.mapping.get(int(m.group(2)), m.group(2))}", text)


def run_blocks(blocks: list[Block], cwd: Path, env: dict, logs: Path, timeout_s: float = COMMAND_TIMEOUT_S) -> list[Ran]:
    """Every command of ``blocks`` (already ``plan``-ned) in ``cwd``, each checked as the module's doc
    says; the first failure raises an AssertionError naming the command and where the page shows it.
    Prints each command's seconds."""
    ran: list[Ran] = []
    logs.mkdir(parents=True, exist_ok=True)
    for b in blocks:
        ports, servers = _Ports(), []
        try:
            for c in b.commands:
                t0 = time.monotonic()
                if c.server_path is None:
                    ran.append(_run_one(c, ports.apply(c.text), cwd, env, timeout_s))
                    continue
                text, port = ports.server_args(c.text.removesuffix("&").rstrip())
                server = ServerProcess(
                    ["bash", "-c", f"exec {text}"], f"http://127.0.0.1:{port}", logs / f"server-{len(ran)}.log",
                    ready_path=c.server_path, cwd=cwd, env=env, start_timeout_s=START_TIMEOUT_S[c.server_path],
                )  # fmt: skip
                servers.append(server)
                ran.append(Ran(c, text, subprocess.CompletedProcess(server.args, None), 0.0, server=True))
                try:
                    server.start()
                except ServerFailed as exc:
                    raise AssertionError(f"{c.where}: `{c.text}`: {exc}") from None
                ran[-1].seconds = time.monotonic() - t0
                print(f"after the demo: {ran[-1].seconds:6.1f} s to answer  {c.text}", flush=True)
                for url in re.findall(r"https?://(?:127\.0\.0\.1|localhost):\d+[^\s#]*", ports.apply(c.comment)):
                    status = get(url)
                    assert status == 200, f"{c.where}: `{c.text}`: the page its comment shows ({url}) answers {status}"
        finally:
            for server in servers:
                server.stop()
                r = next(r for r in ran if r.result.args is server.args)
                r.result = subprocess.CompletedProcess(
                    server.args, server.proc.returncode if server.proc else None, server.output(), ""
                )
    return ran


def _run_one(c: Command, text: str, cwd: Path, env: dict, timeout_s: float) -> Ran:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{c.where}: `{c.text}` still running after {timeout_s:.0f} s") from None
    seconds = time.monotonic() - t0
    print(f"after the demo: {seconds:6.1f} s  {c.text}", flush=True)
    assert proc.returncode == 0, f"{c.where}: `{text}` exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    if c.text.split()[0] == "curl":
        try:
            body = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"{c.where}: `{c.text}` printed no JSON:\n{proc.stdout[-2000:]}") from None
        assert not (isinstance(body, dict) and "error_code" in body), f"{c.where}: `{c.text}` answered {body}"
    return Ran(c, text, proc, seconds)
