"""The pages' "after the demo" blocks (tests/doc_commands.py) parse, need nothing filled in, and name
what the demo makes; the parser reads them as bash would, and the runner fails a command the way a
user would see it fail. tests/pipeline/test_headline_command.py runs them after a real demo."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import doc_commands as dc
import pytest

from tfqa.core.errors import UserError
from tfqa.inference.manifest import EnsembleManifest
from tfqa.pipeline.profiles import ci_profile

REPO = Path(__file__).resolve().parents[1]
PAGES = [p for p in dc.pages(REPO) if p.is_file()]
MODEL_URI = re.compile(r"models:/([^/@\s'\"]+)(?:@([^/\s'\"]+))?")


def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text)
    return page


def _texts(page: Path) -> list[list[str]]:
    return [[c.text for c in b.commands] for b in dc.page_blocks(page)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_pages_marked_commands_parse_and_need_nothing_filled_in(page):
    blocks = dc.page_blocks(page)
    assert all(b.commands for b in blocks), f"{page}: a marked block without commands"
    filled = [f"{c.where}: {c.placeholders()} in `{c.text}`" for b in blocks for c in b.commands if c.placeholders()]
    assert not filled, filled
    stray = dc.markers_outside_blocks(page)
    assert not stray, f"{page}: lines {stray} hold {dc.MARKER!r} but no ```bash fence follows on the next line"


def test_the_readme_shows_commands_for_after_the_demo():
    assert dc.page_blocks(REPO / "README.md"), f"README.md: no block marked {dc.MARKER!r}"


def test_every_model_a_marked_command_serves_is_one_the_demo_registers():
    manifest = EnsembleManifest.load(ci_profile().manifest)
    names = {m.name for m in manifest.models}
    wrong = []
    for b in dc.all_blocks(REPO):
        for c in b.commands:
            for name, alias in MODEL_URI.findall(c.text):
                if name not in names or alias not in ("", manifest.alias):
                    wrong.append(f"{c.where}: models:/{name}{'@' + alias if alias else ''}")
    assert not wrong, f"the demo registers {sorted(names)} with alias {manifest.alias!r}, not: {wrong}"


def test_the_model_uri_check_reads_name_and_alias():
    # The check above, on the URI the README once showed (the full-scale name, not the demo's).
    assert MODEL_URI.findall("mlflow models serve -m models:/tfqa-v2-albert@champion --env-manager local") == [
        ("tfqa-v2-albert", "champion")
    ]
    assert MODEL_URI.findall("x 'models:/tfqa-demo-v2/1'") == [("tfqa-demo-v2", "")]


def test_continued_lines_join_and_comments_go_but_hashes_in_quotes_and_words_stay(tmp_path):
    page = _page(
        tmp_path,
        "<!-- after the demo -->\n"
        "```bash\n"
        "# a comment line\n"
        "\n"
        "mlflow ui   # then open http://127.0.0.1:5000/#/experiments/0/runs\n"
        "curl -s 'http://h/#/x' -H \"a # b\" \\\n"
        "    -d x#y  # trailing\n"
        "echo 'one\n"
        "two # still text'\n"
        "```\n",
    )
    (block,) = dc.page_blocks(page)
    assert [c.text for c in block.commands] == [
        "mlflow ui",
        "curl -s 'http://h/#/x' -H \"a # b\" -d x#y",
        "echo 'one\ntwo # still text'",
    ]
    assert [c.line for c in block.commands] == [5, 6, 8]
    assert block.commands[0].comment == "then open http://127.0.0.1:5000/#/experiments/0/runs"
    assert block.commands[1].comment == "trailing"


def test_only_a_marker_on_the_line_right_before_a_bash_fence_marks_it(tmp_path):
    page = _page(
        tmp_path,
        "<!-- after the demo -->\n\n```bash\necho blank-line-between\n```\n"
        "<!-- after the demo -->\ntext\n```bash\necho prose-between\n```\n"
        "<!-- after the demo -->\n```python\nprint('another language')\n```\n"
        "````markdown\n<!-- after the demo -->\n```bash\necho inside-an-example\n```\n````\n"
        "```bash\necho unmarked\n```\n"
        "  <!-- after the demo -->\n  ```bash\n  echo indented\n  ```\n",
    )
    assert _texts(page) == [["echo indented"]]
    assert dc.markers_outside_blocks(page) == [1, 6, 11]


def test_a_command_shown_twice_runs_once_but_its_blocks_servers_start_again(tmp_path):
    one = _page(tmp_path, "<!-- after the demo -->\n```bash\nmlflow ui\necho a\n```\n")
    two = tmp_path / "two.md"
    two.write_text(
        "<!-- after the demo -->\n```bash\nmlflow ui\necho a\n```\n"
        "<!-- after the demo -->\n```bash\nmlflow ui\ncurl -s 127.0.0.1:5000\necho a\n```\n"
        "<!-- after the demo -->\n```bash\nmlflow models serve -m models:/m@a --port 5001 &\n```\n"
    )
    planned = dc.plan(dc.page_blocks(one) + dc.page_blocks(two))
    assert [(b.page.name, b.line, [c.text for c in b.commands]) for b in planned] == [
        ("page.md", 2, ["mlflow ui", "echo a"]),
        ("two.md", 7, ["mlflow ui", "curl -s 127.0.0.1:5000"]),
        ("two.md", 13, ["mlflow models serve -m models:/m@a --port 5001 &"]),
    ]
    assert [c.server_path for b in planned for c in b.commands] == ["/health", None, "/health", None, "/ping"]


@pytest.mark.parametrize(
    "body, where",
    [("echo 'open\n", "page.md:3: marked ```bash block: a quote is never closed"), ("echo a \\\n", "page.md:3")],
)
def test_a_block_bash_could_not_finish_reading_is_refused_naming_its_line(tmp_path, body, where):
    page = _page(tmp_path, f"<!-- after the demo -->\n```bash\n{body}```\n")
    with pytest.raises(UserError) as err:
        dc.page_blocks(page)
    assert str(err.value).startswith(f"{tmp_path}/{where}")


def test_placeholders_are_found_outside_quotes_and_ellipses_anywhere(tmp_path):
    page = _page(
        tmp_path,
        "<!-- after the demo -->\n```bash\n"
        "mlflow runs describe --run-id <run id>\n"
        'curl -d \'{"document_text": "<P> text </P>"}\' 127.0.0.1:1 2>&1\n'
        "mlflow run . -e predict -P data=...\n```\n",
    )
    (block,) = dc.page_blocks(page)
    assert [c.placeholders() for c in block.commands] == [["<run id>"], [], ["..."]]


def test_a_blocks_server_port_is_mapped_in_the_server_and_the_later_commands():
    ports = dc._Ports()
    text, port = ports.server_args("mlflow models serve -m models:/m@a --env-manager local --port 5001")
    assert text == f"mlflow models serve -m models:/m@a --env-manager local --port {port}" and port != 5001
    assert ports.apply("curl -s http://127.0.0.1:5001/x http://localhost:5001 127.0.0.1:50011") == (
        f"curl -s http://127.0.0.1:{port}/x http://localhost:{port} 127.0.0.1:50011"
    )
    text, default = ports.server_args("mlflow ui")
    assert text == f"mlflow ui --port {default}" and ports.apply("127.0.0.1:5000/#/x") == f"127.0.0.1:{default}/#/x"


def _run(tmp_path: Path, body: str) -> list[dc.Ran]:
    page = _page(tmp_path, f"<!-- after the demo -->\n```bash\n{body}```\n")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return dc.run_blocks(dc.plan(dc.page_blocks(page)), tmp_path, env, tmp_path / "logs")


def test_the_runner_sources_the_venv_as_typed_and_keeps_each_result(tmp_path):
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    ran = _run(tmp_path, ". .venv/bin/activate\npython -c 'print(6 * 7)'  # a comment\n")
    assert [(r.shell, r.result.returncode) for r in ran] == [(". .venv/bin/activate", 0), ("python -c 'print(6 * 7)'", 0)]
    assert ran[1].result.stdout == "42\n"


def test_the_runner_fails_a_command_naming_where_the_page_shows_it(tmp_path):
    with pytest.raises(AssertionError, match=r"page\.md:4: `\. \.venv/bin/activate` exited 1"):
        _run(tmp_path, "echo ok\n. .venv/bin/activate\n")


def test_the_runner_fails_a_curl_that_answers_an_mlflow_error(tmp_path):
    (tmp_path / "error.json").write_text('{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no model"}')
    (tmp_path / "fine.json").write_text('{"predictions": []}')
    ran = _run(tmp_path, f"curl -s file://{tmp_path}/fine.json\n")
    assert ran[0].result.stdout == '{"predictions": []}'
    with pytest.raises(AssertionError, match="answered .*RESOURCE_DOES_NOT_EXIST"):
        _run(tmp_path, f"curl -s file://{tmp_path}/error.json\n")
    (tmp_path / "page.txt").write_text("<html>")
    with pytest.raises(AssertionError, match="printed no JSON"):
        _run(tmp_path, f"curl -s file://{tmp_path}/page.txt\n")
