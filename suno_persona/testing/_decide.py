"""How the emulator answers a request: a synchronous decision over plain values.

:meth:`Decisions._answer` takes the method, path, headers, body bytes and ``task_id`` of a
request, decides the reply from the emulator's state and records the request. It never
awaits, so every check-and-update of the state is atomic on the event loop.
"""

from __future__ import annotations

import collections
import json
import math
import random
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from suno_persona import PersonaRequest, RequestValidationError
from suno_persona.testing._answers import (
    MESSAGES,
    RETRY_AFTER_CODES,
    Bucket,
    Fault,
    RecordedRequest,
    Reply,
)
from suno_persona.testing._tasks import EmulatedTask

__all__ = ["RESOURCES", "Decisions"]

ENDPOINT_PATH: Final = "/api/v1/client/job/suno-persona-generate"
TASK_PATH: Final = "/api/v1/client/job/TaskInfo"
BALANCE_PATH: Final = "/api/v1/client/account/balance"
RESOURCES: Final = {
    ("POST", ENDPOINT_PATH): "persona",
    ("GET", TASK_PATH): "task",
    ("GET", BALANCE_PATH): "balance",
}
_UNLIMITED_BALANCE: Final = 1_000_000
_REDACTED: Final = "<redacted>"
_SECRET_HEADERS: Final = frozenset({"x-api-key", "authorization"})


class Decisions:
    """The answering part of :class:`PersonaEmulator`, over the state declared here."""

    api_keys: tuple[str, ...]
    credits: int | None
    requests: list[RecordedRequest]
    personas: dict[str, PersonaRequest]
    _clock: Callable[[], float]
    _random: random.Random
    _fail_rate: float
    _fail_codes: tuple[int, ...]
    _rate_limit: float | None
    _burst: int
    _rate_limit_headers: bool
    _by_pair: dict[tuple[str, str], str]
    _buckets: dict[tuple[int, str], Bucket]
    _faults: dict[str, collections.deque[Fault]]
    _maintenance_until: float | None
    _tasks: dict[str, EmulatedTask]
    _check_tasks: bool

    def _answer(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        task_id: str | None = None,
    ) -> Reply:
        try:
            payload: Any = json.loads(body)
        except (ValueError, RecursionError):
            payload, is_json = None, False
        else:
            is_json = True
        self._announce: tuple[int, int] | None = None
        reply = self._decide(method, path, headers, payload, is_json=is_json, task_id=task_id)
        if self._announce is not None and reply.quota is None:
            reply = attrs.evolve(reply, quota=self._announce)
        self.requests.append(
            RecordedRequest(
                method=method,
                path=path,
                headers={
                    k: _REDACTED if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()
                },
                json=payload,
                code=reply.code,
                timestamp=self._clock(),
            )
        )
        return reply

    def _decide(  # noqa: PLR0911 - one return per answer
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        payload: Any,
        *,
        is_json: bool,
        task_id: str | None = None,
    ) -> Reply:
        resource = RESOURCES.get((method, path))
        if resource is None:
            return Reply(404, f"no endpoint {method} {path}")
        key = headers.get("x-api-key")
        if not key:
            return Reply(401, "API key missing: send it in the x-api-key header")
        if key not in self.api_keys:
            return Reply(401, "API key invalid")
        refusal = self._refusal(self.api_keys.index(key), self._clock(), resource)
        if refusal is not None:
            return refusal
        if resource == "task":
            return self._task_info(task_id)
        if resource == "balance":
            balance = _UNLIMITED_BALANCE if self.credits is None else self.credits
            return Reply(200, "success", data={"balance": balance})
        if not is_json:
            return Reply(422, "request: body must be JSON")
        return self._create(payload)

    def _refusal(self, key_index: int, now: float, resource: str = "persona") -> Reply | None:
        """Maintenance, injected faults, random faults and the rate limit, in that order.

        Random faults are the persona endpoint's only; the others apply to ``resource``.
        """
        if self._maintenance_until is not None:
            left = self._maintenance_until - now
            if left > 0:
                return Reply(455, MESSAGES[455], retry_after=math.ceil(left))
            self._maintenance_until = None
        faults = self._faults[resource]
        if faults:
            fault = faults[0]
            fault.left -= 1
            if fault.left == 0:
                faults.popleft()
            return Reply(fault.code, fault.message, retry_after=fault.retry_after)
        if resource == "persona" and self._fail_rate and self._random.random() < self._fail_rate:
            code = self._random.choice(self._fail_codes)
            seconds = 1 if code in RETRY_AFTER_CODES else None
            return Reply(code, MESSAGES.get(code, "error"), retry_after=seconds)
        if self._rate_limit is not None:
            bucket = self._buckets.setdefault(
                (key_index, resource), Bucket(float(self._burst), now)
            )
            wait = bucket.take(now, self._rate_limit, self._burst)
            if self._rate_limit_headers:
                # The bucket as a quota: whole tokens left, and the seconds until it is full.
                full = (self._burst - bucket.tokens) / self._rate_limit
                self._announce = (int(bucket.tokens), math.ceil(full))
            if wait is not None:
                return Reply(429, MESSAGES[429], retry_after=max(1, math.ceil(wait)))
        return None

    def _create(self, payload: Any) -> Reply:
        """Validate the body, then make the persona (or find the one made for the pair)."""
        try:
            persona = PersonaRequest.from_dict(payload)
        except RequestValidationError as exc:
            return Reply(422, str(exc))
        if self._check_tasks:
            task = self._tasks.get(persona.task_id)
            reason = "task_id not found" if task is None else task.refusal(persona, self._clock())
            if reason is not None:
                return Reply(422, reason)
        pair = (persona.task_id, persona.suno_id)
        persona_id = self._by_pair.get(pair)
        if persona_id is None:
            if self.credits is not None:
                if self.credits <= 0:
                    return Reply(402, MESSAGES[402])
                self.credits -= 1
            persona_id = self._new_id()
            self._by_pair[pair] = persona_id
            self.personas[persona_id] = persona
        return Reply(200, "success", data={"persona_id": persona_id})

    def _task_info(self, task_id: str | None) -> Reply:
        if not task_id:
            return Reply(422, "task_id: is required")
        task = self._tasks.get(task_id)
        if task is None:
            return Reply(404, f"task {task_id} not found")
        return Reply(200, "success", data=task.info(self._clock()))

    def _new_id(self) -> str:
        while True:
            persona_id = f"persona_{secrets.token_hex(8)}"
            if persona_id not in self.personas:
                return persona_id
