"""The public surface: exactly these names, each documented, typed, and shipped."""

from __future__ import annotations

import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import suno_persona
import suno_persona.testing

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncPersonaClient",
    "AuthenticationError",
    "Completions",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "NotFoundError",
    "Outcome",
    "Persona",
    "PersonaClient",
    "PersonaRequest",
    "RateLimitError",
    "RequestValidationError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "Song",
    "SunoPersonaError",
    "SunoTask",
    "TaskFailedError",
    "TaskStatus",
    "TaskTimeoutError",
    "ThrottlePolicy",
    "UnprocessableEntityError",
    "__version__",
]


def test_all_is_exactly_the_public_api():
    """suno_persona.__all__ lists the public names, sorted, and nothing else."""
    assert suno_persona.__all__ == PUBLIC
    assert suno_persona.__all__ == sorted(suno_persona.__all__)


def test_testing_all():
    """suno_persona.testing exports the emulator kit."""
    assert suno_persona.testing.__all__ == ["PersonaEmulator", "RecordedRequest", "serve"]


@pytest.mark.parametrize("module", [suno_persona, suno_persona.testing])
def test_every_export_exists_and_is_documented(module):
    """Each exported name resolves, and each class or function has a docstring."""
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_public_classes_live_in_private_modules():
    """Implementation stays in _modules; the package only re-exports."""
    for name in PUBLIC[:-1]:
        obj = getattr(suno_persona, name)
        if name == "Outcome":  # a type alias: its members are public classes
            assert set(obj.__args__) == {suno_persona.Persona, suno_persona.SunoPersonaError}
            continue
        module = obj.__module__
        assert module.split(".")[1].startswith("_"), (name, module)


@pytest.mark.slow  # more than a second of wall time
def test_py_typed_is_in_the_wheel(tmp_path):
    """The built wheel ships py.typed, so type checkers use our annotations."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("suno_persona-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "suno_persona/py.typed" in names
    assert "suno_persona/testing/_plugin.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
