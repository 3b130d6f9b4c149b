"""The task query and the balance on the wire, as pure functions: recorded answers in, values or
errors out, with no event loop and no network. And the check of a request against its task."""

from __future__ import annotations

import json

import pytest

import suno_persona as sp
from suno_persona._queries import (
    balance_query,
    parse_balance,
    parse_task,
    task_query,
)
from suno_persona._task import check_request

# The provider's documented example of a running task (docs.crun.ai, get-task-info).
DOCUMENTED_RUNNING = {
    "code": 200,
    "message": "success",
    "data": {
        "task_id": "d6956973-2f17-43d4-8514-af6cc3a2f55d",
        "provider": "Suno",
        "model_version": "sunov5",
        "status": "running",
        "param": {
            "model": "suno/music-generate",
            "callback_url": None,
            "input": {
                "mode": "custom",
                "model": "v5",
                "instrumental": False,
                "title": "Midnight Addiction",
                "tags": "Western R&B, female vocal",
                "lyrics": "[Verse 1] ...",
            },
        },
        "create_at": 1768900378,
        "result": None,
        "duration_s": None,
        "complete_at": None,
        "source": "api",
    },
}


def song_item(suno_id: str, duration: float | None = 180.5, **extra: object) -> dict[str, object]:
    item: dict[str, object] = {
        "suno_id": suno_id,
        "title": f"Song {suno_id}",
        "suno_audio_url": f"https://cdn.example/{suno_id}.mp3",
        "suno_image_url": f"https://cdn.example/{suno_id}.jpeg",
        "suno_image_large_url": f"https://cdn.example/{suno_id}-large.jpeg",
        "model_name": "chirp-crow",
        **extra,
    }
    if duration is not None:
        item["duration"] = duration
    return item


def answer(data: object, code: int = 200) -> bytes:
    return json.dumps({"code": code, "message": "success", "data": data}).encode()


def task_data(status: str, result: object = None, **fields: object) -> dict[str, object]:
    data = dict(DOCUMENTED_RUNNING["data"])  # type: ignore[arg-type]
    data.update(status=status, result=result, **fields)
    return data


def parse(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> sp.SunoTask:
    return parse_task(status, headers or {}, body, now=0.0)


class TestTheTask:
    def test_the_documented_example_answer(self):
        """The provider's own example: a running task, no songs, its times and its data kept."""
        task = parse(json.dumps(DOCUMENTED_RUNNING).encode())
        assert task.task_id == "d6956973-2f17-43d4-8514-af6cc3a2f55d"
        assert task.status is sp.TaskStatus.RUNNING
        assert not task.status.finished
        assert task.songs == ()
        assert task.model_version == "sunov5"
        assert task.created_at == 1768900378.0
        assert task.completed_at is None
        assert (task.error_code, task.error_message) == (None, None)
        assert task.raw == DOCUMENTED_RUNNING["data"]

    def test_a_success_with_two_songs(self):
        """Each item of result.suno_data is a Song, in order, with its fields and raw item."""
        items = [song_item("suno_a", 180.5), song_item("suno_b", 95, lyrics="la la")]
        body = answer(task_data("success", {"suno_data": items}, complete_at=1768900500))
        task = parse(body)
        assert task.status is sp.TaskStatus.SUCCESS
        assert task.status.finished
        assert task.completed_at == 1768900500.0
        first, second = task.songs
        assert first == sp.Song(
            suno_id="suno_a",
            title="Song suno_a",
            duration=180.5,
            audio_url="https://cdn.example/suno_a.mp3",
            image_url="https://cdn.example/suno_a.jpeg",
            model_name="chirp-crow",
        )
        assert second.suno_id == "suno_b"
        assert second.duration == 95.0
        assert second.raw["lyrics"] == "la la"
        assert task.song("suno_b") is second
        assert task.song("suno_c") is None

    def test_a_song_without_its_optional_fields(self):
        """A song that gives only its id: every other field is None, never an error."""
        task = parse(answer(task_data("success", {"suno_data": [{"suno_id": "s1"}]})))
        assert task.songs == (sp.Song(suno_id="s1"),)
        assert task.songs[0].duration is None

    def test_a_failed_task(self):
        """A failed task's result carries its code and message."""
        result = {"code": 501, "message": "generation failed: lyrics rejected"}
        task = parse(answer(task_data("failed", result)))
        assert task.status is sp.TaskStatus.FAILED
        assert task.status.finished
        assert task.songs == ()
        assert task.error_code == 501
        assert task.error_message == "generation failed: lyrics rejected"

    @pytest.mark.parametrize(
        ("code", "read"), [("501", 501), (True, None), ("x1", None), (5.0, None)]
    )
    def test_a_failed_tasks_code_is_an_int_or_none(self, code, read):
        task = parse(answer(task_data("failed", {"code": code, "message": 7})))
        assert task.error_code == read
        assert task.error_message is None

    def test_a_failed_task_without_a_result(self):
        task = parse(answer(task_data("failed", None)))
        assert (task.error_code, task.error_message) == (None, None)

    def test_an_unknown_status_is_kept_and_not_finished(self):
        """A status this version does not know: UNKNOWN, its text in raw, not finished."""
        task = parse(answer(task_data("queued_for_review")))
        assert task.status is sp.TaskStatus.UNKNOWN
        assert task.raw["status"] == "queued_for_review"
        assert not task.status.finished

    def test_songs_of_a_task_that_has_not_succeeded_are_not_read(self):
        task = parse(answer(task_data("running", {"suno_data": [song_item("s")]})))
        assert task.songs == ()

    def test_unknown_fields_are_kept(self):
        task = parse(answer(task_data("pending", None, new_field={"x": 1})))
        assert task.raw["new_field"] == {"x": 1}

    def test_fields_of_the_wrong_type_are_none(self):
        """An optional field of an unexpected type is left out (it stays in raw)."""
        task = parse(answer(task_data("pending", None, model_version=5, create_at="yesterday")))
        assert (task.model_version, task.created_at) == (None, None)
        assert parse(answer(task_data("pending", None, create_at=True))).created_at is None
        assert parse(answer(task_data("pending", None, create_at=10**400))).created_at is None

    @pytest.mark.parametrize(
        "data",
        [
            None,
            [],
            {"status": "running"},
            {"task_id": "", "status": "running"},
            {"task_id": "t", "status": 3},
            {"task_id": "t"},
            {"task_id": "t", "status": "success", "result": None},
            {"task_id": "t", "status": "success", "result": {"suno_data": {}}},
            {"task_id": "t", "status": "success", "result": {"suno_data": [{"title": "x"}]}},
            {"task_id": "t", "status": "success", "result": {"suno_data": ["s1"]}},
        ],
    )
    def test_a_malformed_answer_is_an_invalid_response(self, data):
        """An answer without what a task needs is InvalidResponseError, never a task."""
        with pytest.raises(sp.InvalidResponseError):
            parse(answer(data))

    def test_an_error_envelope_is_the_api_error(self):
        body = json.dumps({"code": 404, "message": "task not found", "data": None}).encode()
        with pytest.raises(sp.NotFoundError, match="task not found"):
            parse(body, status=404)

    def test_a_429_carries_its_retry_after(self):
        body = json.dumps({"code": 429, "message": "slow down", "data": None}).encode()
        with pytest.raises(sp.RateLimitError) as caught:
            parse(body, status=429, headers={"retry-after": "7"})
        assert caught.value.retry_after == 7.0

    def test_the_query_percent_encodes_the_id(self):
        prepared = task_query("a b/c?d&e", api_key=None)
        assert prepared.method == "GET"
        assert prepared.path == "/api/v1/client/job/TaskInfo?task_id=a%20b%2Fc%3Fd%26e"
        assert prepared.headers is None
        assert prepared.body is None
        assert task_query("t", api_key="sk-x").headers["x-api-key"] == "sk-x"  # type: ignore[index]

    @pytest.mark.parametrize("task_id", ["", "   ", None, 5])
    def test_a_bad_task_id_is_refused_before_anything_is_sent(self, task_id):
        with pytest.raises(sp.RequestValidationError) as caught:
            task_query(task_id, api_key=None)
        assert caught.value.field == "task_id"


class TestTheBalance:
    def test_the_documented_answer(self):
        body = json.dumps({"code": 200, "message": "success", "data": {"balance": 1000}}).encode()
        assert parse_balance(200, {}, body, now=0.0) == 1000.0

    def test_a_fractional_balance(self):
        assert parse_balance(200, {}, answer({"balance": 12.5}), now=0.0) == 12.5

    @pytest.mark.parametrize("data", [None, {}, {"balance": "1000"}, {"balance": True}, []])
    def test_a_malformed_balance_is_an_invalid_response(self, data):
        with pytest.raises(sp.InvalidResponseError, match=r"data\.balance"):
            parse_balance(200, {}, answer(data), now=0.0)

    def test_a_402_is_insufficient_credits(self):
        body = json.dumps({"code": 402, "message": "not enough credits", "data": None}).encode()
        with pytest.raises(sp.InsufficientCreditsError):
            parse_balance(402, {}, body, now=0.0)

    def test_the_query(self):
        prepared = balance_query(api_key=None)
        assert (prepared.method, prepared.path) == ("GET", "/api/v1/client/account/balance")


def finished_task(*songs: sp.Song) -> sp.SunoTask:
    return sp.SunoTask(task_id="task_1", status=sp.TaskStatus.SUCCESS, songs=songs)


class TestTheCheck:
    def test_a_request_for_one_of_the_songs_passes(self):
        task = finished_task(sp.Song(suno_id="a", duration=60.0), sp.Song(suno_id="b"))
        check_request(
            task, sp.PersonaRequest(task_id="task_1", suno_id="a", name="n", vocal_end=60)
        )
        check_request(
            task, sp.PersonaRequest(task_id="task_1", suno_id="b", name="n", vocal_end=999)
        )

    def test_a_suno_id_that_is_not_in_the_task_names_suno_id(self):
        task = finished_task(sp.Song(suno_id="a"), sp.Song(suno_id="b"))
        request = sp.PersonaRequest(task_id="task_1", suno_id="zz", name="n")
        with pytest.raises(sp.RequestValidationError) as caught:
            check_request(task, request)
        assert caught.value.field == "suno_id"
        assert "'a', 'b'" in caught.value.rule

    def test_a_window_past_the_end_names_vocal_end(self):
        task = finished_task(sp.Song(suno_id="a", duration=60.0))
        request = sp.PersonaRequest(
            task_id="task_1", suno_id="a", name="n", vocal_start=10, vocal_end=60.5
        )
        with pytest.raises(sp.RequestValidationError) as caught:
            check_request(task, request)
        assert caught.value.field == "vocal_end"
        assert "60 s" in caught.value.rule

    def test_a_start_past_the_end_names_vocal_start(self):
        task = finished_task(sp.Song(suno_id="a", duration=60.0))
        request = sp.PersonaRequest(task_id="task_1", suno_id="a", name="n", vocal_start=60)
        with pytest.raises(sp.RequestValidationError) as caught:
            check_request(task, request)
        assert caught.value.field == "vocal_start"
