"""The one model-server client (model.data.curate.endpoint) against a real local
OpenAI-compatible server: cache, JSON answers with one quoted retry, errors, check."""
import socket

import numpy as np
import pytest

from model.data.curate.endpoint import (AnswerError, Endpoint, EndpointError, audio_part, image_part,
                                        json_object, text_part)
from tests.openai_server import Fail, Garbage, Hang, OpenAIServer, n_audio, n_images, text


@pytest.fixture
def server():
    servers = []

    def make(answer):
        s = OpenAIServer(answer)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_json_object_rule():
    assert json_object('Sure: ```json\n{"a": 1, "b": {"c": [2]}}\n```') == {"a": 1, "b": {"c": [2]}}
    assert json_object('text {"score": 7} more') == {"score": 7}
    for bad in ("no json", '{"a": 1} {"b": 2}', "{'a': 1}", "[1, 2]"):
        with pytest.raises(ValueError):
            json_object(bad)


def test_images_and_audio_sent_as_content_parts(server):
    s = server(lambda r: f"{n_images(r)} images, {n_audio(r)} audio")
    ep = Endpoint(s.url, "m")
    rgb = np.zeros((32, 48, 3), np.uint8)
    msg = [{"role": "user", "content": [text_part("look"), image_part(rgb), image_part(rgb),
                                        audio_part(np.zeros(1600, np.float32), 16000)]}]
    assert ep.complete(msg) == "2 images, 1 audio"
    part = s.requests[0]["messages"][0]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert s.requests[0]["model"] == "m" and s.requests[0]["temperature"] == 0


def test_answers_cached_by_content(server, tmp_path):
    s = server(lambda r: '{"score": 3}' if "one" in text(r) else '{"score": 9}')
    parse = lambda o: o["score"]  # noqa: E731
    ep = Endpoint(s.url, "m", cache_dir=tmp_path)
    ask = lambda t: ep.ask_json([{"role": "user", "content": t}], parse)  # noqa: E731
    assert ask("one") == 3 and ask("two") == 9 and ask("one") == 3
    assert s.count() == 2 and ep.cache_hits == 1
    again = Endpoint(s.url, "m", cache_dir=tmp_path)  # a rerun: nothing asked
    assert again.ask_json([{"role": "user", "content": "two"}], parse) == 9
    assert s.count() == 2
    other = Endpoint(s.url, "other-model", cache_dir=tmp_path)  # the model is part of the key
    assert other.ask_json([{"role": "user", "content": "two"}], parse) == 9
    assert s.count() == 3


def test_bad_json_retried_once_quoting_the_error(server, tmp_path):
    def answer(r):
        if len(r["messages"]) == 1:
            return "The score is seven."
        return '{"score": 7}'

    s = server(answer)
    ep = Endpoint(s.url, "m", cache_dir=tmp_path)
    assert ep.ask_json([{"role": "user", "content": "rate"}], lambda o: o["score"]) == 7
    retry = s.requests[1]["messages"]
    assert retry[1] == {"role": "assistant", "content": "The score is seven."}
    assert "no JSON object" in retry[2]["content"] or "found 0" in retry[2]["content"]


def test_wrong_schema_twice_is_an_answer_error_and_not_cached(server, tmp_path):
    s = server(lambda r: '{"score": "high"}')

    def parse(o):
        if not isinstance(o.get("score"), int):
            raise ValueError('"score" must be an integer')
        return o["score"]

    ep = Endpoint(s.url, "m", cache_dir=tmp_path)
    with pytest.raises(AnswerError, match="after one retry") as e:
        ep.ask_json([{"role": "user", "content": "rate"}], parse)
    assert e.value.answer == '{"score": "high"}'
    assert '"score" must be an integer' in text(s.requests[1])  # the error was quoted
    assert s.count() == 2 and not list(tmp_path.rglob("*.json"))


def test_http_errors_timeouts_and_garbage(server):
    s = server(lambda r: Fail(500) if "fail" in text(r) else Hang(3) if "hang" in text(r) else Garbage())
    ep = Endpoint(s.url, "m", retries=1, timeout_s=0.3)
    with pytest.raises(EndpointError, match="HTTP 500"):
        ep.complete([{"role": "user", "content": "fail"}])
    assert s.count(lambda r: "fail" in text(r)) == 2  # retried once
    with pytest.raises(EndpointError, match="timed out"):
        ep.complete([{"role": "user", "content": "hang"}])
    with pytest.raises(EndpointError, match="bad response|no choices"):
        ep.complete([{"role": "user", "content": "garbage"}])


def test_check_finds_a_down_endpoint(server):
    Endpoint(server(lambda r: "x").url, "m").check()  # up: no error
    with pytest.raises(EndpointError, match="not reachable"):
        Endpoint(f"http://127.0.0.1:{_free_port()}", "m").check()


def test_schema_sent_as_response_format_and_dropped_for_a_server_that_refuses_it(tmp_path):
    from model.data.curate.stages import REVIEW_FORMAT, parse_review

    with OpenAIServer(lambda r: '{"score": 7}') as s:
        ep = Endpoint(s.url, "m")
        assert ep.ask_json([{"role": "user", "content": "rate"}], parse_review, response_format=REVIEW_FORMAT) == 7
        fmt = s.formats[0]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "review"
        assert fmt["json_schema"]["schema"]["properties"]["score"]["type"] == "integer"
        assert ep.complete([{"role": "user", "content": "free text"}]) and s.formats[1] is None  # only when asked

    with OpenAIServer(lambda r: "I would say 8." if len(r["messages"]) == 1 else '{"score": 8}',
                      reject_response_format=True) as s:
        ep = Endpoint(s.url, "m", cache_dir=tmp_path)
        ask = lambda t: ep.ask_json([{"role": "user", "content": t}], parse_review,  # noqa: E731
                                    response_format=REVIEW_FORMAT)
        assert ask("one") == 8  # 400 → asked again without the format; the free answer retried once
        assert ask("two") == 8
        assert s.rejected == 1 and not ep.takes_format  # remembered: not sent again
        assert s.formats == [REVIEW_FORMAT, None, None, None, None]
        assert ep.requests == 4


def test_other_http_400s_are_still_errors(server):
    s = server(lambda r: Fail(400))
    ep = Endpoint(s.url, "m", retries=0)
    with pytest.raises(EndpointError, match="HTTP 400"):
        ep.complete([{"role": "user", "content": "x"}], response_format={"type": "json_object"})
    assert ep.takes_format and s.count() == 1  # not mistaken for a refused format
