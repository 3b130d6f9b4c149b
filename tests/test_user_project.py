"""A user's project that mocks the endpoint with aioresponses as docs/testing.md says.

``tests/user_project`` is that project: its dependencies and pytest settings, and as its test
file the example of the section "Mocking the HTTP layer". Its tests run with pytest in a
subprocess of this interpreter, whose environment has the test extra's pins (the same
``aioresponses-ng`` the docs name) and the current aiohttp.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from test_docs import ROOT, _environment, python_blocks

PROJECT = ROOT / "tests" / "user_project"
TESTING = ROOT / "docs" / "testing.md"


def _section(title: str) -> str:
    text = TESTING.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_project_is_what_the_docs_say():
    """Its test file is the docs' example, its pins and pytest settings those of the docs."""
    (example,) = [b for b in python_blocks(TESTING) if "aioresponses" in b.code]
    assert (PROJECT / "tests" / "test_mocked.py").read_text(encoding="utf-8") == example.code
    project = (PROJECT / "pyproject.toml").read_text(encoding="utf-8")
    install = re.search(r"pip install '(aioresponses-ng[^']*)'", _section("Mocking the HTTP layer"))
    assert install is not None
    assert f'"{install[1]}"' in project
    assert f'"{install[1]}"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    settings = re.search(r"```toml\n(.*?)```", _section("Setup"), flags=re.DOTALL)
    assert settings is not None
    assert settings[1] in project


def test_the_users_mocked_test_passes_on_the_installed_aiohttp(tmp_path: Path):
    """A 429 then a 200, mocked with aioresponses: the user's test passes, warnings as errors."""
    project = tmp_path / "singer-app"
    shutil.copytree(PROJECT, project)
    report = tmp_path / "report.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:cov",
            f"--junitxml={report}",
            "tests",
        ],
        cwd=project,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    suite = ET.parse(report).getroot()[0]  # noqa: S314 - pytest's own report
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "0")
