"""Every error suno-persona raises.

The whole tree, in one place::

    SunoPersonaError
    ├── RequestValidationError (also ValueError)   rejected before any I/O
    ├── APIConnectionError                         could not reach the API, or the connection broke
    │   └── APITimeoutError                        an attempt exceeded its timeout
    ├── InvalidResponseError                       neither a valid success nor an error envelope
    ├── TaskFailedError                            the music task waited for failed
    ├── TaskTimeoutError                           the music task did not finish in time
    └── APIError                                   the API answered with an error code
        ├── AuthenticationError        401
        ├── InsufficientCreditsError   402
        ├── NotFoundError              404
        ├── UnprocessableEntityError   422
        ├── RateLimitError             429  retried
        ├── ServiceUnavailableError    455  retried (maintenance)
        ├── ServerError                500  retried only with retry_server_errors=True
        ├── GenerationFailedError      501
        └── FeatureDisabledError       505

Every error carries ``attempts`` (requests the call sent before giving up; 0 when nothing
was sent), ``elapsed`` (seconds the call took), ``retryable`` and ``retry_after`` (seconds
to wait before trying again, when known). No error ever holds the API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from suno_persona._task import TaskStatus

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "NotFoundError",
    "RateLimitError",
    "RequestValidationError",
    "ServerError",
    "ServiceUnavailableError",
    "SunoPersonaError",
    "TaskFailedError",
    "TaskTimeoutError",
    "UnprocessableEntityError",
    "error_for_code",
]


class SunoPersonaError(Exception):
    """Base of every error raised by suno-persona.

    Attributes:
        message: What went wrong, in words.
        attempts: Requests the call sent (0 when nothing was sent).
        elapsed: Seconds the whole call took, ``None`` outside a call.
        retryable: Whether the client's policy treats this outcome as worth another attempt.
        retry_after: Seconds after which trying again makes sense, when known: the server's
            ``Retry-After``, or what was left of a shared pause or maintenance wait that
            outlasted the call's deadline.
    """

    message: str
    attempts: int
    retryable: bool = False
    retry_after: float | None = None
    elapsed: float | None = None

    def __init__(self, message: str, *, attempts: int = 0, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, attempts={self.attempts})"


class RequestValidationError(SunoPersonaError, ValueError):
    """A request broke a rule of the endpoint's schema; nothing was sent.

    Attributes:
        field: The name of the offending field (a rule across fields names the later one,
            as in ``vocal_end`` must be greater than ``vocal_start``).
        rule: The rule that was broken, in words.
    """

    field: str
    rule: str

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class APIConnectionError(SunoPersonaError):
    """The API could not be reached, or the connection broke before a full reply arrived.

    Attributes:
        sent: Whether the request may have reached the server. ``False`` means the
            connection could not be opened, so repeating it is safe.
    """

    sent: bool

    def __init__(
        self, message: str, *, attempts: int = 0, sent: bool = True, retryable: bool | None = None
    ) -> None:
        super().__init__(
            message, attempts=attempts, retryable=not sent if retryable is None else retryable
        )
        self.sent = sent


class APITimeoutError(APIConnectionError):
    """An attempt did not complete within its timeout (or what the deadline left of it).

    Attributes:
        deadline: ``True`` when the call's deadline (``RetryPolicy.deadline``) ran out,
            which is never retried; ``False`` when one attempt's timeout did.
    """

    deadline: bool

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 0,
        sent: bool = True,
        retryable: bool | None = None,
        deadline: bool = False,
    ) -> None:
        super().__init__(message, attempts=attempts, sent=sent, retryable=retryable)
        self.deadline = deadline


class InvalidResponseError(SunoPersonaError):
    """The API answered with something that is neither a valid success nor an error envelope.

    Attributes:
        http_status: The HTTP status of the reply.
    """

    http_status: int

    def __init__(
        self, message: str, *, http_status: int, attempts: int = 0, retryable: bool | None = None
    ) -> None:
        super().__init__(message, attempts=attempts, retryable=retryable)
        self.http_status = http_status


class TaskFailedError(SunoPersonaError):
    """The music task that was waited for failed, so no persona can be made from it.

    Attributes:
        task_id: The task's id.
        code: The code of the task's result, when it gave one.
        message: The message of the task's result (or a description when it gave none).
    """

    task_id: str
    code: int | None

    def __init__(self, task_id: str, *, code: int | None, message: str | None) -> None:
        text = message or "the task failed without a message"
        super().__init__(text)
        self.task_id = task_id
        self.code = code

    def __str__(self) -> str:
        code = "" if self.code is None else f" [{self.code}]"
        return f"task {self.task_id} failed{code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"TaskFailedError(task_id={self.task_id!r}, code={self.code}, message={self.message!r})"
        )


class TaskTimeoutError(SunoPersonaError):
    """The music task had not finished when the wait for it timed out.

    Attributes:
        task_id: The task's id.
        last_status: The task's status at the last poll, ``None`` when no poll answered.
    """

    task_id: str
    last_status: TaskStatus | None

    def __init__(self, task_id: str, *, last_status: TaskStatus | None, timeout: float) -> None:
        status = "no answer yet" if last_status is None else f"last status {last_status.value!r}"
        super().__init__(f"task {task_id} did not finish within {timeout:g} s ({status})")
        self.task_id = task_id
        self.last_status = last_status

    def __repr__(self) -> str:
        return f"TaskTimeoutError(task_id={self.task_id!r}, last_status={self.last_status})"


class APIError(SunoPersonaError):
    """The API answered with an error code.

    Raised as itself for a code the documentation does not list; each documented code has
    its own subclass.

    Attributes:
        code: The effective code (the envelope's ``code``, else the HTTP status).
        message: The API's own message, verbatim (or the HTTP reason when there was none).
        http_status: The HTTP status of the reply.
        retry_after: Seconds the server asked us to wait (``Retry-After``), when it said.
    """

    code: int
    http_status: int
    code_meaning: ClassVar[str] = "unexpected error code"

    def __init__(
        self,
        message: str,
        *,
        code: int,
        http_status: int,
        retry_after: float | None = None,
        attempts: int = 0,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, attempts=attempts, retryable=retryable)
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g}s)"
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code}, message={self.message!r}, "
            f"http_status={self.http_status}, retry_after={self.retry_after!r}, "
            f"attempts={self.attempts})"
        )


class AuthenticationError(APIError):
    """401: the API key is missing or invalid."""

    code_meaning = "key missing or invalid"


class InsufficientCreditsError(APIError):
    """402: the account does not have enough credits."""

    code_meaning = "not enough credits"


class NotFoundError(APIError):
    """404: the resource or endpoint does not exist."""

    code_meaning = "resource or endpoint not found"


class UnprocessableEntityError(APIError):
    """422: the request failed the API's validation (also an unknown ``task_id``)."""

    code_meaning = "request failed validation"


class RateLimitError(APIError):
    """429: rate limited. Retried with backoff, honouring ``Retry-After``."""

    code_meaning = "rate limited"
    retryable = True


class ServiceUnavailableError(APIError):
    """455: the service is under maintenance. Retried with backoff, honouring ``Retry-After``."""

    code_meaning = "service under maintenance"
    retryable = True


class ServerError(APIError):
    """500: an unexpected server error. Retried only with ``retry_server_errors=True``."""

    code_meaning = "unexpected server error"


class GenerationFailedError(APIError):
    """501: the persona generation failed on the provider's side."""

    code_meaning = "generation failed"


class FeatureDisabledError(APIError):
    """505: the feature is currently disabled for this account or service."""

    code_meaning = "feature disabled"


_BY_CODE: dict[int, type[APIError]] = {
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    455: ServiceUnavailableError,
    500: ServerError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}


def error_for_code(code: int) -> type[APIError]:
    """Return the error class for an API code; :class:`APIError` itself for an unknown one."""
    return _BY_CODE.get(code, APIError)
