"""The persona endpoint's calls: build the POST, send it through the pipeline, make the Persona.

With ``wait_for_task``, a call first waits for its task (``_polling``) and checks the
request against it (``_task.check_request``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from suno_persona import _protocol
from suno_persona._deadline import Deadline
from suno_persona._errors import SunoPersonaError
from suno_persona._models import Persona, PersonaRequest
from suno_persona._pipeline import Call
from suno_persona._polling import TaskQueries

__all__ = ["Outcome", "PersonaCalls", "coerce"]

_UNBOUNDED = Deadline()

Outcome = Persona | SunoPersonaError
"""One result of a fan-out: the :class:`Persona`, or the request's :class:`SunoPersonaError`."""


class PersonaCalls(TaskQueries):
    """The persona endpoint's calls (a part of :class:`AsyncPersonaClient`)."""

    _url: str

    def _outcomes(
        self, wait: float | None
    ) -> Callable[[PersonaRequest | Mapping[str, Any]], Awaitable[Outcome]]:
        if wait is None:
            return self._generate_outcome

        async def checked_outcome(request: PersonaRequest | Mapping[str, Any]) -> Outcome:
            try:
                checked = coerce(request)
                await self._check_task(checked, wait)
            except SunoPersonaError as error:
                return error
            return await self._generate_outcome(checked)

        return checked_outcome

    async def _generate_outcome(self, request: PersonaRequest | Mapping[str, Any]) -> Outcome:
        try:
            return await self._generate(coerce(request))
        except SunoPersonaError as error:
            return error

    async def _generate(self, request: PersonaRequest) -> Persona:
        session = self._open_session() or await self._ensure_open()
        # The client's own session sends the headers itself; a session of yours is not ours
        # to change, so they go with each request.
        prepared = _protocol.build_request(
            request, api_key=self._api_key if session is self._user_session else None
        )
        now = self._clock()
        seconds = self._retry.deadline
        call = Call(
            request,
            prepared,
            self._url,
            now,
            _UNBOUNDED if seconds is None else Deadline(now + seconds),
            parse=_protocol.parse_persona_id,
            throttle=self._throttle,
        )
        if self._hooks:
            self._started(call)
        try:
            persona_id = await self._run(session, call)
        except SunoPersonaError as error:
            self._failed(call, error)
            raise
        except BaseException:
            if self._hooks:
                self._finished(call, self._clock() - call.started)
            raise
        persona = Persona(
            persona_id=persona_id,
            request=request,
            attempts=call.sent,
            elapsed=self._clock() - call.started,
        )
        if self._hooks:
            self._finished(call, persona.elapsed, persona=persona)
        return persona


def coerce(request: PersonaRequest | Mapping[str, Any]) -> PersonaRequest:
    if isinstance(request, PersonaRequest):
        return request
    return PersonaRequest.from_dict(request)
