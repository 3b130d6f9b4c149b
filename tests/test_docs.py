"""Every Python example in README.md and docs/ is executed.

The convention, for a fenced block opened with ```python (or ```py):

* A block that defines a top-level ``test_*`` function is a pytest test file, as on
  docs/testing.md. It is written to a temporary directory and run by pytest in a subprocess,
  with ``asyncio_mode = "auto"``, warnings as errors, and the fixtures of the installed
  plugin. It passes when at least one test ran and every test passed.
* Any other block is a script, run as ``python -W error example.py`` in a fresh interpreter,
  in a temporary directory, while an emulator serves in this test's event loop; the
  environment has ``SUNO_API_KEY=sk-test`` and ``SUNO_API_BASE_URL=<the emulator>``, so a
  block reads as a user would write it (``AsyncPersonaClient()``, ``asyncio.run(main())``).
  It passes when it exits 0, writes nothing to stderr (no traceback, no warning, no unclosed
  session), and its stdout contains ``persona_``, or each text given by an
  ``<!-- expect: text -->`` comment.
* A script marked ``<!-- needs: redis -->`` runs with a real redis-server: each
  ``redis://localhost:6379`` of the block is replaced by that server's address first.
* A block marked ``<!-- module: name -->`` is a module of an application that a framework
  serves (FastAPI, Flask, arq, Celery), not a script: here it is only compiled, and a test of
  tests/test_integration_frameworks.py runs it for real, as ``name.py``, with its framework,
  the emulator upstream and a redis-server (``doc_module`` there takes it from the page).
* The HTML comments sit on the lines right before the fence (Markdown renders nothing for
  them): ``<!-- expect: text -->`` (repeatable), ``<!-- needs: redis -->``,
  ``<!-- module: name -->``, ``<!-- skip: reason -->`` to skip the block. Skip only what
  cannot run alone, such as a fragment that shows a signature.

Blocks in other languages (console, bash, toml, text, ...) are not run; the README's two
commands are run by ``.ci/run``, and a test here keeps them exactly what it expects. Another
checks that docs/reference.md lists every name of ``suno_persona.__all__``.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

import suno_persona

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
TIMEOUT = 120.0
DEFAULT_EXPECT = "persona_"
BATCH_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[cli]' && "
    ".venv/bin/suno-persona batch examples/personas.jsonl -o personas.out.jsonl --emulate"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'"
    " && .venv/bin/python -m coverage run -m pytest"
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<name>[a-z]+):\s*(?P<value>.*?)\s*-->\s*$")
_DIRECTIVES = frozenset({"expect", "module", "needs", "skip"})
_PYTHON = frozenset({"python", "py", "python3"})

PYTEST_INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


@attrs.frozen
class Block:
    """One fenced Python block of a page."""

    page: Path
    line: int
    code: str
    expect: tuple[str, ...]
    skip: str | None
    needs: tuple[str, ...] = ()
    module: str | None = None

    @property
    def where(self) -> str:
        return f"{_display(self.page)}:{self.line}"

    @property
    def is_test_file(self) -> bool:
        return any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test")
            for node in ast.parse(self.code).body
        )


def _display(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def _directives(lines: list[str], fence_index: int, where: str) -> dict[str, list[str]]:
    """The ``<!-- name: value -->`` comments on the lines right above a fence."""
    found: dict[str, list[str]] = {}
    index = fence_index - 1
    while index >= 0 and (match := _DIRECTIVE.match(lines[index])):
        name, value = match["name"], match["value"]
        if name not in _DIRECTIVES:
            raise ValueError(f"{where}: unknown directive <!-- {name}: ... -->")
        if not value:
            raise ValueError(f"{where}: <!-- {name}: --> needs a value")
        found.setdefault(name, []).insert(0, value)
        index -= 1
    return found


def python_blocks(page: Path) -> list[Block]:
    """Every fenced Python block of ``page``, dedented, with its directives."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].split(maxsplit=1)[0].lower() if opening["info"] else ""
        start = index
        index += 1
        body = []
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[index])
            index += 1
        else:
            raise ValueError(f"{_display(page)}:{start + 1}: unclosed code fence")
        index += 1
        if language not in _PYTHON:
            continue
        where = f"{_display(page)}:{start + 1}"
        found = _directives(lines, start, where)
        code = textwrap.dedent("\n".join(line.removeprefix(indent) for line in body)) + "\n"
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                code=code,
                expect=tuple(found.get("expect", [DEFAULT_EXPECT])),
                skip=found["skip"][0] if "skip" in found else None,
                needs=tuple(found.get("needs", [])),
                module=found["module"][0] if "module" in found else None,
            )
        )
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUNO_", "PYTEST_"))}
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONUTF8"] = "1"
    return {**env, **extra}


def _params() -> list[object]:
    return [
        pytest.param(
            block,
            id=block.where,
            marks=[pytest.mark.skip(reason=block.skip)] if block.skip else [],
        )
        for block in BLOCKS
    ]


def test_the_docs_have_examples():
    """The collection found the examples: a parser that finds none would pass vacuously."""
    pages = {block.page.name for block in BLOCKS}
    assert {"README.md", "index.md", "recipes.md", "testing.md", "song-to-persona.md"} <= pages
    assert len(BLOCKS) >= 20


def test_the_collector_follows_the_convention(tmp_path: Path):
    """Directives apply to the block right below them; other languages are left alone."""
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n"
        "```python\nprint('persona_1')\n```\n\n"
        "<!-- expect: one -->\n<!-- expect: two -->\n"
        "```py\nprint('one two')\n```\n\n"
        "```console\n$ echo not run\n```\n\n"
        "- In a list:\n\n    <!-- skip: a fragment -->\n    ```python\n    f(\n    ```\n\n"
        '````python\nasync def test_x():\n    """```"""\n````\n',
        encoding="utf-8",
    )
    blocks = python_blocks(page)
    assert [(b.line, b.expect, b.skip) for b in blocks] == [
        (3, ("persona_",), None),
        (9, ("one", "two"), None),
        (20, ("persona_",), "a fragment"),
        (24, ("persona_",), None),
    ]
    assert blocks[2].code == "f(\n"
    assert [b.is_test_file for b in (blocks[0], blocks[3])] == [False, True]


def test_an_unknown_directive_is_an_error(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("<!-- expcet: typo -->\n```python\nprint()\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown directive"):
        python_blocks(page)


def test_the_reference_lists_every_export():
    """docs/reference.md names each public object, so a new export is not left undocumented."""
    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+- (\w+)$", reference, flags=re.MULTILINE))
    assert listed == set(suno_persona.__all__) - {"__version__"}


def test_the_readme_has_the_two_commands():
    """.ci/run runs the README's first "$ " lines that mention these: keep them exact."""
    commands = [
        line.removeprefix("$ ")
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("$ ")
    ]
    assert next(c for c in commands if "suno-persona batch" in c) == BATCH_COMMAND
    assert next(c for c in commands if "pytest" in c) == TEST_COMMAND
    assert commands[:2] == [BATCH_COMMAND, TEST_COMMAND]


# The music task the examples make personas from (docs/song-to-persona.md): finished.
DOCS_TASKS = {"task_12345678": {"suno_abc123": 184.0, "suno_abc124": 171.5}}


def module_blocks() -> dict[str, Block]:
    """The ``<!-- module: name -->`` blocks of the docs, by name."""
    found: dict[str, Block] = {}
    for block in BLOCKS:
        if block.module is not None:
            assert block.module not in found, f"{block.where}: a second module {block.module}"
            found[block.module] = block
    return found


def test_every_module_block_is_served_by_an_integration_test():
    """A module block left out of the framework tests would be an example nobody runs."""
    served = (ROOT / "tests" / "test_integration_frameworks.py").read_text(encoding="utf-8")
    used = set(re.findall(r'doc_module\("(\w+)"', served))
    assert used == set(module_blocks())
    assert {"fastapi_app", "arq_app", "celery_app", "flask_app"} <= used


@pytest.mark.slow  # the docs' ~60 examples take half a minute: once per CI run is enough
@pytest.mark.parametrize("block", _params())
async def test_example(block: Block, persona_emulator, tmp_path: Path, request):
    """The block runs cleanly and shows what it claims (see the module docstring)."""
    for task_id, songs in DOCS_TASKS.items():
        persona_emulator.add_task(task_id, songs)
    unknown = set(block.needs) - {"redis"}
    assert not unknown, f"{block.where}: unknown <!-- needs: --> {unknown}"
    if block.module is not None:
        compile(block.code, f"{block.module}.py", "exec")
    elif block.is_test_file:
        await asyncio.to_thread(_run_test_file, block, tmp_path)
    else:
        if "redis" in block.needs:
            url = request.getfixturevalue("redis_url").rsplit("/", 1)[0]
            block = attrs.evolve(block, code=block.code.replace("redis://localhost:6379", url))
        await _run_script(block, tmp_path, persona_emulator.base_url)


async def _run_script(block: Block, directory: Path, base_url: str) -> None:
    script = directory / "example.py"
    script.write_text(block.code, encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        str(script),
        cwd=directory,
        env=_environment(SUNO_API_KEY="sk-test", SUNO_API_BASE_URL=base_url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{block.where}: still running after {TIMEOUT:g}s")
    stdout, stderr = out.decode(), err.decode()
    report = f"{block.where} exited {process.returncode}\n--- stdout\n{stdout}--- stderr\n{stderr}"
    assert process.returncode == 0, report
    assert not stderr, report
    for text in block.expect:
        assert text in stdout, f"expected {text!r} in the output of {report}"


def _run_test_file(block: Block, directory: Path) -> None:
    (directory / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    (directory / "test_example.py").write_text(block.code, encoding="utf-8")
    report_xml = directory / "report.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",  # neither is used by the examples; both are slow to load
            "-p",
            "no:cov",
            f"--junitxml={report_xml}",
            "test_example.py",
        ],
        cwd=directory,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    report = f"{block.where}: pytest exited {result.returncode}\n{result.stdout}{result.stderr}"
    assert result.returncode == 0, report
    suite = ET.parse(report_xml).getroot()  # noqa: S314 - pytest's own report
    if suite.tag == "testsuites":
        suite = suite[0]
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] > 0, report
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, report
