"""``PersonaClient``, the blocking client: threads, Ctrl-C, fork, close, errors, secrets.

The emulator serves from an event loop in a thread of its own (``threaded_emulator``), so the
tests themselves are plain functions, as the code of a Flask or Celery user is.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import FIELDS, KEY
from threaded_emulator import ThreadedEmulator

import suno_persona as sp
from suno_persona.events import CallFinished, CallStarted, Event

SECRET = "sk-SECRET-sync-0123"


@pytest.fixture(name="emulators")
def _emulators() -> Iterator[Callable[..., ThreadedEmulator]]:
    made: list[ThreadedEmulator] = []

    def make(**options: Any) -> ThreadedEmulator:
        emulator = ThreadedEmulator(**options)
        made.append(emulator)
        return emulator

    yield make
    for emulator in made:
        emulator.stop()


@pytest.fixture(name="emu")
def _emu(emulators) -> ThreadedEmulator:
    return emulators()


@pytest.fixture(name="client")
def _client(emu) -> Iterator[sp.PersonaClient]:
    with sp.PersonaClient(api_key=KEY, base_url=emu.base_url) as client:
        yield client


def loop_thread(client: sp.PersonaClient) -> threading.Thread:
    loop = client._shared.current
    assert loop is not None
    return loop.thread


@pytest.mark.slow
def test_eight_threads_share_one_client_under_a_rate_limit(emulators, caplog):
    """8 threads x 25 calls at a 50/s limit: all succeed, few 429s, on one loop thread; no
    warning in any thread (the filters are the process's), nothing logged by asyncio."""
    emu = emulators(rate_limit=50)
    threads_seen: set[str] = set()

    def hook(event: Event) -> None:
        if isinstance(event, CallFinished):
            threads_seen.add(threading.current_thread().name)

    personas: list[sp.Persona] = []
    failures: list[BaseException] = []
    with (
        warnings.catch_warnings(record=True) as caught,
        sp.PersonaClient(api_key=KEY, base_url=emu.base_url, event_hooks=[hook]) as client,
    ):
        warnings.simplefilter("always")

        def work(worker: int) -> None:
            try:
                for n in range(25):
                    fields = {"task_id": f"task_{worker}_{n}", "suno_id": "suno_1", "name": "A"}
                    personas.append(client.generate_persona(fields))
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert failures == []
    assert len({p.persona_id for p in personas}) == 200
    codes = emu.codes()
    assert codes.count(200) == 200
    # Issue 22's bound. Measured at this code: 10-18 429s in 40 of 40 runs (20 of them
    # beside a CPU burner); the start-up costs about 10 (the limit's first 429s, before
    # its first test).
    assert codes.count(429) <= 0.10 * 200, codes.count(429)
    assert threads_seen == {"suno-persona-loop"}


def test_close_joins_the_loop_thread(client):
    """The loop thread starts with the first call; close() stops it and waits for it."""
    assert client._shared.current is None
    client.generate_persona(**FIELDS)
    thread = loop_thread(client)
    assert thread.is_alive()
    assert thread.daemon

    client.close()

    assert not thread.is_alive()
    assert client.closed
    assert "closed" in repr(client)
    client.close()
    with pytest.raises(sp.SunoPersonaError, match="closed"):
        client.generate_persona(**FIELDS)


def test_a_client_dropped_without_close_stops_its_thread(emu):
    """Garbage collection closes the client as close() does (so does interpreter exit)."""
    client = sp.PersonaClient(api_key=KEY, base_url=emu.base_url)
    client.generate_persona(**FIELDS)
    thread = loop_thread(client)
    del client
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_interpreter_exit_closes_it_without_warnings(emu, tmp_path):
    """A module-level client, never closed, in a script run with warnings as errors."""
    script = tmp_path / "app.py"
    script.write_text(
        "import sys\n"
        "from suno_persona import PersonaClient\n"
        "client = PersonaClient(api_key='sk-test', base_url=sys.argv[1])\n"
        "print(client.generate_persona(task_id='t', suno_id='s', name='n').persona_id)\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-X", "dev", str(script), emu.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("persona_")
    assert result.stderr == ""


def test_with_options_shares_the_loop_and_closes_with_its_parent(client):
    """A derived client runs on the same loop thread; closing it leaves the parent open."""
    patient = client.with_options(timeout=5, retry=None)
    assert patient.generate_persona(**FIELDS).attempts == 1
    assert loop_thread(client) is loop_thread(patient)
    patient.close()
    assert patient.closed
    assert not client.closed
    client.generate_persona(**FIELDS)
    again = client.with_options(timeout=7)
    client.close()
    with pytest.raises(sp.SunoPersonaError, match="closed"):
        again.generate_persona(**FIELDS)
    with pytest.raises(sp.SunoPersonaError, match="closed"):
        client.with_options(timeout=1)


def test_with_options_checks_its_arguments(client):
    with pytest.raises(ValueError, match="timeout"):
        client.with_options(timeout=-1)


def test_keyboard_interrupt_cancels_its_request(emulators):
    """Ctrl-C while a call waits: the request is cancelled on the loop, then the interrupt
    is raised; the client goes on working."""
    latencies = iter([30.0])
    emu = emulators(latency=lambda: next(latencies, 0.0))
    finished: list[CallFinished] = []

    def hook(event: Event) -> None:
        if isinstance(event, CallFinished):
            finished.append(event)

    def interrupt_once_sent() -> None:
        deadline = time.monotonic() + 10
        while not emu.codes() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does

    assert threading.current_thread() is threading.main_thread()
    with sp.PersonaClient(api_key=KEY, base_url=emu.base_url, event_hooks=[hook]) as client:
        interrupter = threading.Thread(target=interrupt_once_sent)
        started = time.monotonic()
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            client.generate_persona(**FIELDS)
        interrupter.join()

        assert time.monotonic() - started < 10
        # The call had stopped (cancelled: no persona, no error) before the interrupt rose.
        assert len(finished) == 1
        assert (finished[0].persona, finished[0].error) == (None, None)
        assert client.generate_persona(**FIELDS).persona_id.startswith("persona_")


def test_a_forked_child_uses_its_own_loop(client):
    """After os.fork() the child's calls run on a loop thread of its own; the parent's go on."""
    client.generate_persona(**FIELDS)
    parent_thread = loop_thread(client)
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock the child.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            persona = client.generate_persona(task_id="task_child", suno_id="s", name="Child")
            own = loop_thread(client)
            code = 0 if persona.persona_id.startswith("persona_") and own.is_alive() else 2
            client.close()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if status[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child's call never returned")
    assert os.waitstatus_to_exitcode(status[1]) == 0
    assert loop_thread(client) is parent_thread
    assert client.generate_persona(**FIELDS).persona_id.startswith("persona_")


@pytest.mark.parametrize(
    ("setup", "error_cls"),
    [
        (lambda emu: emu.fail_next(501), sp.GenerationFailedError),
        (lambda emu: emu.fail_next(500), sp.ServerError),
        (lambda emu: emu.maintenance(3600), sp.ServiceUnavailableError),
        (lambda emu: setattr(emu, "credits", 0), sp.InsufficientCreditsError),
    ],
)
def test_errors_are_the_async_clients_typed_errors(emu, client, setup, error_cls):
    emu.do(lambda: setup(emu.emulator))
    with pytest.raises(error_cls) as caught:
        client.generate_persona(**FIELDS)
    assert type(caught.value) is error_cls
    assert caught.value.attempts == 1


def test_a_bad_key_and_a_bad_request_are_typed(emu):
    with sp.PersonaClient(api_key="sk-wrong", base_url=emu.base_url) as client:
        with pytest.raises(sp.AuthenticationError):
            client.generate_persona(**FIELDS)
        with pytest.raises(sp.RequestValidationError) as caught:
            client.generate_persona({**FIELDS, "name": ""})
    assert caught.value.field == "name"
    with pytest.raises(ValueError, match="timeout"):
        sp.PersonaClient(api_key=KEY, timeout=0)


def test_generate_many_returns_one_outcome_per_input(client):
    outcomes = client.generate_many([FIELDS, {**FIELDS, "name": ""}, {**FIELDS, "task_id": "t2"}])
    assert [type(o) for o in outcomes] == [sp.Persona, sp.RequestValidationError, sp.Persona]


def test_generate_as_completed_yields_every_index_once(client):
    requests = [{**FIELDS, "task_id": f"task_{n}"} for n in range(20)]
    with client.generate_as_completed(requests, concurrency=4) as results:
        indexes = sorted(index for index, outcome in results if isinstance(outcome, sp.Persona))
    assert indexes == list(range(20))


@pytest.mark.parametrize("how", ["close", "gc"])
def test_leaving_generate_as_completed_early_stops_the_work(emulators, how):
    """Closing the iterator, or dropping it, cancels the calls in flight and starts no more."""
    emu = emulators(latency=0.05)
    started: list[CallStarted] = []
    requests = ({**FIELDS, "task_id": f"task_{n}"} for n in range(1000))
    with sp.PersonaClient(
        api_key=KEY,
        base_url=emu.base_url,
        event_hooks=[lambda e: isinstance(e, CallStarted) and started.append(e)],
    ) as client:
        results = client.generate_as_completed(requests, concurrency=4)
        next(results)
        if how == "close":
            results.close()
        else:
            del results
            gc.collect()
        calls = len(started)
        time.sleep(0.3)
        assert len(started) == calls
        assert calls <= 1 + 2 * 4 + 4
        loop = client._shared.current
        assert loop is not None

        async def tasks() -> int:
            return len(asyncio.all_tasks()) - 1

        assert loop.run(tasks()) == 0


def test_the_key_is_in_no_repr_and_no_error(emulators):
    """Not in the client's repr, nor in an error whose reply echoed it, even with locals."""
    emu = emulators(api_keys=[SECRET])
    emu.do(lambda: emu.emulator.fail_next(500, message=f"bad key {SECRET}"))
    with sp.PersonaClient(api_key=SECRET, base_url=emu.base_url, retry=None) as client:
        derived = client.with_options(timeout=3)
        with pytest.raises(sp.ServerError) as caught:
            client.generate_persona(**FIELDS)
        texts = [repr(client), repr(derived), str(caught.value), repr(caught.value)]
    rendered = traceback.TracebackException.from_exception(caught.value, capture_locals=True)
    texts.append("".join(rendered.format()))
    assert "Traceback" in texts[-1]
    assert all(SECRET not in text for text in texts), texts
    with pytest.raises(sp.SunoPersonaError) as refused:
        sp.PersonaClient(api_key=SECRET + "\n")
    assert SECRET not in str(refused.value)


def test_close_ends_the_calls_in_flight_of_other_threads(emulators):
    """A thread waiting on a call when another closes the client gets an error, not a hang."""
    emu = emulators(latency=10.0)
    client = sp.PersonaClient(api_key=KEY, base_url=emu.base_url)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            client.generate_persona(**FIELDS)
        except BaseException as error:
            failures.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while not emu.codes() and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()
    caller.join(timeout=5)
    assert not caller.is_alive()
    # (What the async client raises for a call whose connection it closed.)
    assert len(failures) == 1
    assert isinstance(failures[0], sp.SunoPersonaError)


def test_a_call_from_an_event_hook_is_refused_instead_of_deadlocking(emu, caplog):
    """An event hook runs in the loop's thread: calling the client there would wait for ever."""
    inner: list[BaseException] = []

    def hook(event: Event) -> None:
        if isinstance(event, CallStarted) and event.request.task_id == FIELDS["task_id"]:
            try:
                client.generate_persona({**FIELDS, "task_id": "task_inner"})
            except sp.SunoPersonaError as error:
                inner.append(error)

    client = sp.PersonaClient(api_key=KEY, base_url=emu.base_url, event_hooks=[hook])
    with client:
        client.generate_persona(**FIELDS)
    assert len(inner) == 1
    assert "own event loop thread" in str(inner[0])


def test_the_small_things(client, emu):
    """base_url, hooks given to with_options, an exhausted iterator, a closed client's with."""
    seen: list[Event] = []
    assert client.base_url == emu.base_url
    hooked = client.with_options(event_hooks=[seen.append])
    hooked.generate_persona(**FIELDS)
    assert any(isinstance(event, CallFinished) for event in seen)
    results = client.generate_as_completed([FIELDS])
    assert [index for index, _ in results] == [0]
    with pytest.raises(StopIteration):
        next(results)
    client.close()
    with pytest.raises(sp.SunoPersonaError, match="closed"), client:
        pass


# The music task a persona comes from, and the balance, through the blocking client. The
# emulator's tasks run on real time here, so their delays and the polls are a few ms.
TASK_PATH = "/api/v1/client/job/TaskInfo"
PERSONA_PATH = "/api/v1/client/job/suno-persona-generate"


def paths(emu: ThreadedEmulator, path: str) -> int:
    """How many requests to ``path`` the emulator received."""
    return emu.do(lambda: sum(r.path == path for r in emu.emulator.requests))


def add_task(emu: ThreadedEmulator, task_id: str, songs: dict[str, float], **delays: Any) -> None:
    emu.do(lambda: emu.emulator.add_task(task_id, songs, **delays))


def test_get_task_and_get_balance(emulators):
    """get_task answers the task as it is now (typed errors too); get_balance the credits."""
    emu = emulators(credits=7)
    add_task(emu, "t1", {"s1": 120.0, "s2": 61.5})
    add_task(emu, "t2", {"s1": 60.0}, pending=3600)
    with sp.PersonaClient(api_key=KEY, base_url=emu.base_url) as client:
        task = client.get_task("t1")
        assert isinstance(task, sp.SunoTask)
        assert task.status is sp.TaskStatus.SUCCESS
        assert [(s.suno_id, s.duration) for s in task.songs] == [("s1", 120.0), ("s2", 61.5)]
        assert client.get_task("t2").status is sp.TaskStatus.PENDING
        with pytest.raises(sp.NotFoundError):
            client.get_task("nope")
        assert client.get_balance() == 7.0
        client.generate_persona(task_id="t1", suno_id="s1", name="n")
        assert client.get_balance() == 6.0
    assert paths(emu, TASK_PATH) == 3


def test_wait_for_task_polls_until_the_task_succeeded(emulators):
    emu = emulators()
    add_task(emu, "t1", {"s1": 60.0}, pending=0.05, running=0.05)
    with sp.PersonaClient(api_key=KEY, base_url=emu.base_url) as client:
        task = client.wait_for_task("t1", timeout=10, poll_interval=0.01)
    assert task.status is sp.TaskStatus.SUCCESS
    assert [s.suno_id for s in task.songs] == ["s1"]
    assert paths(emu, TASK_PATH) >= 3  # pending, running, ..., success


def test_wait_for_task_raises_task_failed_error(emulators):
    emu = emulators()
    add_task(emu, "t1", {"s1": 60.0}, running=0.05, error=(501, "lyrics rejected"))
    with (
        sp.PersonaClient(api_key=KEY, base_url=emu.base_url) as client,
        pytest.raises(sp.TaskFailedError) as caught,
    ):
        client.wait_for_task("t1", poll_interval=0.01)
    error = caught.value
    assert (error.task_id, error.code, error.message) == ("t1", 501, "lyrics rejected")


def test_wait_for_task_true_refuses_a_song_not_in_the_task_with_no_post(emulators):
    """generate_persona, generate_many, generate_as_completed and with_options take
    wait_for_task=, and task_poll_interval passes through the constructor and with_options:
    the task finishes after the first poll, so at the default 15 s interval the 0.5 s waits
    would time out."""
    emu = emulators(check_tasks=True)
    add_task(emu, "t1", {"s1": 60.0}, running=0.1)
    bad = {"task_id": "t1", "suno_id": "s9", "name": "n"}
    good = {**bad, "suno_id": "s1"}
    with sp.PersonaClient(api_key=KEY, base_url=emu.base_url, task_poll_interval=0.01) as client:
        with pytest.raises(sp.RequestValidationError) as caught:
            client.generate_persona(bad, wait_for_task=0.5)
        assert caught.value.field == "suno_id"
        assert paths(emu, TASK_PATH) >= 2
        assert paths(emu, PERSONA_PATH) == 0

        outcomes = client.generate_many([bad, good], wait_for_task=True)
        assert [type(o) for o in outcomes] == [sp.RequestValidationError, sp.Persona]
        with client.generate_as_completed([bad], wait_for_task=True) as results:
            assert [type(o) for _, o in results] == [sp.RequestValidationError]
        assert paths(emu, PERSONA_PATH) == 1

    add_task(emu, "t1", {"s1": 60.0}, running=0.1)
    with sp.PersonaClient(api_key=KEY, base_url=emu.base_url) as client:
        waiting = client.with_options(wait_for_task=0.5, task_poll_interval=0.01)
        with pytest.raises(sp.RequestValidationError, match="suno_id"):
            waiting.generate_persona(bad)
        assert waiting.generate_persona(good).persona_id.startswith("persona_")
    assert paths(emu, PERSONA_PATH) == 2
