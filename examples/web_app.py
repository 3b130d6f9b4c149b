"""An aiohttp.web app that creates a persona for each ``POST /personas``.

One :class:`AsyncPersonaClient` serves every request: it is opened when the app starts and
closed when it stops (``cleanup_ctx``), so all requests share its connection pool and its
throttle. The JSON body holds the request fields; the reply is ``201 {"persona_id": ...}``,
or an error ``{"error": {"type", "code", "message"}}`` with a status that says whose fault it
was: 400/422 the caller's, 503 (with ``Retry-After``) come back later, 502/504 the API's.

Run it (the key and the API's URL come from ``SUNO_API_KEY`` and ``SUNO_API_BASE_URL``)::

    SUNO_API_KEY=sk-... python examples/web_app.py        # listens on 127.0.0.1:8080
    curl -s localhost:8080/personas -d '{"task_id": "t_1", "suno_id": "s_1", "name": "Neon Siren"}'

Offline, against the emulator: ``suno-persona emulator --port 8000`` in another shell, then
``SUNO_API_KEY=sk-test SUNO_API_BASE_URL=http://127.0.0.1:8000 python examples/web_app.py``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import suno_persona as sp

CLIENT = web.AppKey("client", sp.AsyncPersonaClient)
logger = logging.getLogger("web_app")


def make_app(
    *, api_key: str | None = None, base_url: str | None = None, **client_options: Any
) -> web.Application:
    """Build the app; the client's options default to ``SUNO_API_KEY`` and ``SUNO_API_BASE_URL``."""
    app = web.Application()

    async def persona_client(app: web.Application) -> AsyncIterator[None]:
        async with sp.AsyncPersonaClient(api_key, base_url=base_url, **client_options) as client:
            app[CLIENT] = client
            yield

    app.cleanup_ctx.append(persona_client)
    app.router.add_post("/personas", create_persona)
    return app


async def create_persona(request: web.Request) -> web.Response:
    """``POST /personas``: the body's fields in, ``{"persona_id": ...}`` out."""
    try:
        fields = await request.json()
    except json.JSONDecodeError:
        return _error(400, "InvalidJSON", None, "the body must be a JSON object of fields")
    if not isinstance(fields, dict):
        return _error(400, "InvalidJSON", None, "the body must be a JSON object of fields")
    try:
        persona = await request.app[CLIENT].generate_persona(fields)
    except sp.SunoPersonaError as error:
        return _reply_for(error)
    return web.json_response({"persona_id": persona.persona_id}, status=201)


def _reply_for(error: sp.SunoPersonaError) -> web.Response:
    name = type(error).__name__
    code = error.code if isinstance(error, sp.APIError) else None
    if isinstance(error, (sp.RequestValidationError, sp.UnprocessableEntityError)):
        return _error(422, name, code, error.message)  # the caller can fix the request
    if error.retry_after is not None or isinstance(
        error, (sp.RateLimitError, sp.ServiceUnavailableError)
    ):
        # Busy: a rate limit, maintenance, or a deadline that would pass while waiting for
        # one (APITimeoutError, sent=False); the client retried, so come back later.
        wait = math.ceil(error.retry_after or 1)
        return _error(503, name, code, error.message, headers={"Retry-After": str(wait)})
    if isinstance(error, sp.APITimeoutError):
        return _error(504, name, code, error.message)
    # 401/402/505 and the rest: our configuration or the API, not the caller; the message
    # may say things about our account, so keep it in the logs rather than the reply.
    logger.warning("persona service failed: %r", error)
    return _error(502, name, code, "the persona service failed; try again later")


def _error(
    status: int,
    name: str,
    code: int | None,
    message: str,
    *,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"type": name, "code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    web.run_app(
        make_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
    )
