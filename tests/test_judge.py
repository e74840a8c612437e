"""Judge client and judge-based evaluation against a fake OpenAI-compatible server."""
import json
import threading

import pytest

from live.contract.cli import EXIT_RUNTIME
from model.data.curate.endpoint import base_url
from model.evaluate import cli as evaluate
from model.evaluate.judge import (
    JudgeAnswerError, JudgeClient, JudgeError, group_synonyms, parse_groups_answer,
    parse_scores_answer, score_reasoning,
)
from tests.openai_server import Fail, OpenAIServer


class FakeJudge(OpenAIServer):
    """The test OpenAI server answering a judge: ``answer(prompt) -> str`` makes the
    reply; the first ``fail`` requests get HTTP ``fail_status``."""

    def __init__(self, answer):
        self.answer_prompt = answer
        self.fail, self.fail_status = 0, 503
        self._fail_lock = threading.Lock()
        super().__init__(self._reply)

    def _reply(self, request):
        with self._fail_lock:
            failing = self.fail > 0
            self.fail -= failing
        if failing:
            return Fail(self.fail_status)
        return self.answer_prompt(request["messages"][0]["content"])

    @property
    def prompts(self) -> list[str]:
        return [r["messages"][0]["content"] for r in self.requests]


def synonym_answer(prompt: str) -> str:
    """Groups happy/joyful/glad and sad/down; every other label alone."""
    labels = eval(prompt.rsplit("Input: ", 1)[1].rsplit(" Output:", 1)[0])  # noqa: S307 - our own prompt
    groups = [[w for w in labels if w in ("happy", "joyful", "glad")],
              [w for w in labels if w in ("sad", "down")]]
    groups += [[w] for w in labels if w not in ("happy", "joyful", "glad", "sad", "down")]
    return "Output: " + str([g for g in groups if g])


@pytest.fixture
def judge():
    servers = []

    def make(answer=synonym_answer):
        s = FakeJudge(answer)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_base_url():
    assert base_url("http://h:1") == "http://h:1/v1"
    assert base_url("http://h:1/v1/") == "http://h:1/v1"
    assert base_url("https://h/v1/chat/completions") == "https://h/v1"
    with pytest.raises(ValueError):
        base_url("h:1")


def test_grouping_and_disk_cache(judge, tmp_path):
    j = judge()
    client = JudgeClient(j.url, cache_dir=tmp_path)
    groups = group_synonyms(client, ["Happy", "sad"], ["joyful", "tired"])
    assert sorted(map(sorted, groups)) == [["happy", "joyful"], ["sad"], ["tired"]]
    assert len(j.prompts) == 1
    # same label set in another order → same prompt → cache, no new request
    client2 = JudgeClient(j.url, cache_dir=tmp_path)
    assert group_synonyms(client2, ["tired", "joyful"], ["sad", "happy"]) == groups
    assert len(j.prompts) == 1 and client2.requests == 0


def test_retries_then_succeeds(judge):
    j = judge()
    j.fail = 2
    client = JudgeClient(j.url, retries=3)
    assert group_synonyms(client, ["happy"], ["glad"]) == [["glad", "happy"]]
    assert len(j.prompts) == 3  # two 503s retried by the client, then the answer
    assert client.requests == 1


def test_gives_up_after_retries_and_does_not_retry_client_errors(judge):
    j = judge()
    j.fail = 100
    client = JudgeClient(j.url, retries=2)
    with pytest.raises(JudgeError, match="HTTP 503"):
        client.complete("hi")
    assert len(j.prompts) == 3
    j.fail, j.fail_status = 100, 400
    n = len(j.prompts)
    with pytest.raises(JudgeError, match="HTTP 400"):
        client.complete("hi")
    assert len(j.prompts) == n + 1  # no retry on a 4xx that is not 408/409/429


def test_unreachable_endpoint_is_a_judge_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = JudgeClient(f"http://127.0.0.1:{port}", retries=1)
    with pytest.raises(JudgeError, match="2 attempts"):
        client.complete("hi")


def test_malformed_answer_reported_not_cached(judge, tmp_path):
    j = judge(lambda p: "I think they are all similar emotions.")
    client = JudgeClient(j.url, cache_dir=tmp_path)
    with pytest.raises(JudgeAnswerError) as e:
        group_synonyms(client, ["a"], ["b"])
    assert e.value.answer == "I think they are all similar emotions."
    with pytest.raises(JudgeAnswerError):
        group_synonyms(client, ["a"], ["b"])
    assert len(j.prompts) == 2  # asked again: nothing cached
    assert not list(tmp_path.iterdir())


def test_parse_answers():
    assert parse_groups_answer("```python\n[['a', 'b'], ['c']]\n```") == [["a", "b"], ["c"]]
    assert parse_groups_answer("[[a, b], [c]]") == [["a", "b"], ["c"]]  # MERTools-style
    for bad in ("['a', 'b']", "no", "[]", "[1, 2]"):
        with pytest.raises(ValueError):
            parse_groups_answer(bad)
    assert parse_scores_answer('Sure! {"clue_overlap": 7, "label_overlap": 6.0}') == (7, 6)
    for bad in ('{"clue_overlap": 11, "label_overlap": 5}', '{"clue_overlap": 5}',
                '{"clue_overlap": true, "label_overlap": 5}', "7 and 6",
                '{"clue_overlap": 5, "label_overlap": 5} {"clue_overlap": 1, "label_overlap": 1}'):
        with pytest.raises(ValueError):
            parse_scores_answer(bad)


def test_score_reasoning(judge):
    j = judge(lambda p: '{"clue_overlap": 8, "label_overlap": 5}')
    client = JudgeClient(j.url)
    assert score_reasoning(client, "He frowns. Angry.", "He smiles. Happy.") == (8, 5)
    assert "Reference: He frowns. Angry." in j.prompts[0]
    with pytest.raises(ValueError):
        score_reasoning(client, " ", "x")


# ------------------------------------------------------------------ CLI with judge
def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_emer_ov_with_judge(judge, tmp_path, capsys):
    j = judge()
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": "1", "labels": ["happy", "worried"]},
                                        {"id": "2", "labels": ["sad"]},
                                        {"id": "3", "labels": ["angry"]}])
    pred = _jsonl(tmp_path / "p.jsonl", [{"id": "1", "labels": ["joyful", "calm"]},
                                        {"id": "2", "labels": ["down"]},
                                        {"id": "3", "labels": []}])
    rc = evaluate.main(["emer-ov", "--pred", str(pred), "--gold", str(gold), "--judge", j.url,
                        "--judge-cache", str(tmp_path / "cache"), "--json"])
    out = json.loads(capsys.readouterr().out)
    # 1: G={happy, worried}, P={happy, calm} → 1/2, 1/2; 2: down→sad → 1, 1; 3: empty → 0, 0
    assert out["precision"] == pytest.approx(100 * 1.5 / 3)
    assert out["recall"] == pytest.approx(100 * 1.5 / 3)
    assert out["n"] == 3 and rc == 0
    assert len(j.prompts) == 2  # no call for the empty prediction


def test_cli_emer_reason_reports_malformed(judge, tmp_path, capsys):
    answers = {"A": '{"clue_overlap": 8, "label_overlap": 6}',
               "B": '{"clue_overlap": 4, "label_overlap": 2}',
               "C": "Scores: clue 5, label 5"}

    def answer(prompt):
        return answers[prompt.split("Prediction: ")[1][0]]

    j = judge(answer)
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": i, "explanation": f"ref {i}"} for i in "123"]
                  + [{"id": "4", "explanation": "ref 4"}])
    pred = _jsonl(tmp_path / "p.jsonl", [{"id": "1", "text": "A."}, {"id": "2", "text": "B."},
                                        {"id": "3", "text": "C."}])
    rc = evaluate.main(["emer-reason", "--pred", str(pred), "--gold", str(gold), "--judge", j.url,
                        "--judge-cache", str(tmp_path / "c"), "--json"])
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert rc == 0
    assert out == {"clue_overlap": 6.0, "label_overlap": 4.0, "n": 2, "missing": 1, "malformed": 1}
    assert "malformed judge answer for 3" in cap.err
    assert "1 gold ids have no prediction" in cap.err and "4" in cap.err


def test_cli_judge_unreachable_is_one_line_error(tmp_path, capsys):
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": "1", "explanation": "x"}])
    pred = _jsonl(tmp_path / "p.jsonl", [{"id": "1", "text": "y"}])
    rc = evaluate.main(["emer-reason", "--pred", str(pred), "--gold", str(gold),
                        "--judge", "http://127.0.0.1:9", "--judge-retries", "0",
                        "--judge-cache", str(tmp_path / "c"), "--json"])
    err = capsys.readouterr().err
    assert rc == EXIT_RUNTIME and "Traceback" not in err  # failed while working, not bad input
    assert err.strip().splitlines()[-1].split("\r")[-1].startswith("error: ")


def test_judge_sends_its_schemas_and_reads_the_schema_form(judge):
    from model.evaluate.judge import GROUPS_FORMAT, SCORES_FORMAT

    j = judge(lambda p: '{"groups": [["happy", "glad"], ["sad"]]}' if "group the emotions" in p
              else '{"clue_overlap": 6, "label_overlap": 9}')
    client = JudgeClient(j.url)
    assert group_synonyms(client, ["Happy", "sad"], ["glad"]) == [["happy", "glad"], ["sad"]]
    assert score_reasoning(client, "He frowns. Angry.", "He frowns. Angry.") == (6, 9)
    assert j.formats == [GROUPS_FORMAT, SCORES_FORMAT]
    assert all(f["type"] == "json_schema" and f["json_schema"]["schema"]["type"] == "object" for f in j.formats)


def test_judge_on_a_server_without_structured_outputs(judge):
    j = judge()
    j.reject_response_format = True
    client = JudgeClient(j.url)
    assert group_synonyms(client, ["happy"], ["joyful"]) == [["happy", "joyful"]]
    assert group_synonyms(client, ["sad"], ["down"]) == [["down", "sad"]]
    assert j.rejected == 1 and j.formats[1:] == [None, None]
