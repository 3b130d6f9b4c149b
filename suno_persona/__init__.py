"""suno-persona: an asyncio client for the crun.ai Suno "Generate a Suno persona" endpoint."""

from suno_persona._client import AsyncPersonaClient
from suno_persona._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidResponseError,
    NotFoundError,
    RateLimitError,
    RequestValidationError,
    ServerError,
    ServiceUnavailableError,
    SunoPersonaError,
    TaskFailedError,
    TaskTimeoutError,
    UnprocessableEntityError,
)
from suno_persona._fanout import Completions
from suno_persona._models import Persona, PersonaRequest
from suno_persona._persona import Outcome
from suno_persona._policy import ThrottlePolicy
from suno_persona._retry import RetryPolicy
from suno_persona._sync import PersonaClient
from suno_persona._task import Song, SunoTask, TaskStatus
from suno_persona._version import __version__

__all__ = [
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
