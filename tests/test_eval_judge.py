"""``prefopt eval judge`` end to end over real HTTP: a chat-completions server on 127.0.0.1,
started by the test, rates answers; failures, retries, resume and key secrecy."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import prefopt
from prefopt.cli.main import app
from prefopt.eval.judges import JudgeError, JudgeSpec, Judgment, parse_judgment
from prefopt.registry import PluginInfo, get_registry, reset_registry
from prefopt.testing import run_cli, write_pairs

KEY = "sk-test-SECRET-0123456789"
B_SCORES = [9, 3, 7, 5, 10, 0, 6, 4]
A_SCORES = [5, 3, 8, 2, 10, 1, 6, 9]


class FakeJudgeServer:
    """Scores an answer by the ``[s=N]`` tag it contains; failure modes are switchable."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None, str]] = []  # (answer, auth, model)
        self.fail: set[str] = set()  # answers that get HTTP 500 (echoing the auth header)
        self.throttle_once: set[str] = set()  # answers that get one 429 first
        self.garbage_once: set[str] = set()  # answers that get one unreadable reply first
        self.status: int | None = None  # answer everything with this status
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                answer = re.search(r"Answer to rate:\n(.*)\n", prompt).group(1)  # type: ignore[union-attr]
                auth = self.headers.get("Authorization")
                with server.lock:
                    server.requests.append((answer, auth, body["model"]))
                    first = [a for a, *_ in server.requests].count(answer) == 1
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": "not found"})
                if server.status:
                    return self.reply(server.status, {"error": {"message": "invalid key"}})
                if answer in server.fail:
                    return self.reply(500, {"error": f"upstream crashed while serving {auth}"})
                if answer in server.throttle_once and first:
                    return self.reply(429, {"error": "slow down"}, {"Retry-After": "0"})
                score = int(re.search(r"\[s=(\d+)\]", answer).group(1))  # type: ignore[union-attr]
                content = f'{{"score": {score}, "explanation": "checked"}}'
                if answer in server.garbage_once and first:
                    content = "I would rather not say."
                self.reply(
                    200, {"choices": [{"message": {"role": "assistant", "content": content}}]}
                )

            def reply(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def count(self) -> Counter[str]:
        return Counter(answer for answer, *_ in self.requests)


@pytest.fixture
def server() -> Iterator[FakeJudgeServer]:
    fake = FakeJudgeServer()
    thread = threading.Thread(target=fake.httpd.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def answers_file(path: Path, scores: list[int], tag: str) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": f"What colour is creature {i}?", "answer": f"{tag} {i} [s={s}]"}
        for i, s in enumerate(scores)
    ]
    return write_pairs(path, rows)


def judge_args(server: FakeJudgeServer, answers: Path, *extra: str) -> list[str]:
    return [
        "eval", "judge", "--answers", str(answers), "--base-url", server.url,
        "--model", "judge-1", "--backoff", "0.01", *extra,
    ]  # fmt: skip


def test_scores_metrics_and_win_rate(server: FakeJudgeServer, tmp_path: Path) -> None:
    b = answers_file(tmp_path / "b.jsonl", B_SCORES, "B")
    a = answers_file(tmp_path / "a.jsonl", A_SCORES, "A")
    server.throttle_once.add("B 1 [s=3]")
    server.garbage_once.add("A 2 [s=8]")
    result = CliRunner().invoke(
        app, judge_args(server, b, "--baseline", str(a), "--concurrency", "3"),
        env={"OPENAI_API_KEY": KEY, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    results = json.loads((tmp_path / "judge_results.json").read_text())["metrics"]
    assert results["mean_factuality"] == pytest.approx(sum(B_SCORES) / 8)
    assert results["hallucination_rate"] == pytest.approx(sum(s < 5 for s in B_SCORES) / 8)
    assert results["baseline_mean_factuality"] == pytest.approx(sum(A_SCORES) / 8)
    wins = sum(b_ > a_ for b_, a_ in zip(B_SCORES, A_SCORES, strict=True))
    losses = sum(b_ < a_ for b_, a_ in zip(B_SCORES, A_SCORES, strict=True))
    assert (results["wins"], results["losses"], results["ties"]) == (
        wins,
        losses,
        8 - wins - losses,
    )
    assert results["win_rate"] == pytest.approx(wins / (wins + losses))

    ratings = [
        json.loads(line) for line in (tmp_path / "b.judgments.jsonl").read_text().splitlines()
    ]
    assert [r["key"] for r in ratings] == [f"answers:q{i}" for i in range(8)] + [
        f"baseline:q{i}" for i in range(8)
    ]
    assert [r["score"] for r in ratings] == B_SCORES + A_SCORES
    counts = server.count()
    assert counts["B 1 [s=3]"] == 2 and counts["A 2 [s=8]"] == 2  # retried once each
    assert sum(counts.values()) == 18
    assert {auth for _, auth, _ in server.requests} == {f"Bearer {KEY}"}
    assert {model for *_, model in server.requests} == {"judge-1"}
    assert not list(tmp_path.glob("*.partial*"))


def test_failing_endpoint_keeps_partial_results_and_resume_finishes(
    server: FakeJudgeServer, tmp_path: Path
) -> None:
    b = answers_file(tmp_path / "b.jsonl", B_SCORES, "B")
    server.fail = {"B 2 [s=7]", "B 5 [s=0]"}
    args = judge_args(server, b, "--max-retries", "2", "--concurrency", "2")[2:]
    env = {"OPENAI_API_KEY": KEY, "NO_PROXY": "127.0.0.1"}
    code, out, err = run_cli("eval", "judge", *args, env=env)
    assert code == 1
    assert "error: judge 'openai' failed on answers:q" in err and "after 3 attempts" in err
    assert "HTTP 500" in err and "run the same command again to resume" in err
    assert KEY not in err + out and "***" in err  # the echoed key is redacted
    assert len(err.strip().splitlines()) == 1
    partial = tmp_path / "b.judgments.jsonl.partial"
    saved = [json.loads(line) for line in partial.read_text().splitlines()]
    assert saved and all(r["score"] == B_SCORES[int(r["id"][1:])] for r in saved)
    assert not {r["id"] for r in saved} & {"q2", "q5"}
    assert not (tmp_path / "b.judgments.jsonl").exists()
    assert not (tmp_path / "judge_results.json").exists()
    before = server.count()

    server.fail = set()
    code, out, err = run_cli("eval", "judge", *args, env=env)
    assert code == 0, err
    assert f"resuming: {len(saved)} of 8" in err
    after = server.count()
    for row in saved:  # nothing already rated was asked again
        answer = f"B {row['id'][1:]} [s={int(row['score'])}]"
        assert after[answer] == before[answer] == 1
    results = json.loads((tmp_path / "judge_results.json").read_text())
    assert results["metrics"]["mean_factuality"] == pytest.approx(sum(B_SCORES) / 8)
    assert not partial.exists()
    for path in tmp_path.iterdir():
        assert KEY not in path.read_text()


def test_non_retryable_error_and_bad_usage(server: FakeJudgeServer, tmp_path: Path) -> None:
    b = answers_file(tmp_path / "b.jsonl", B_SCORES[:3], "B")
    server.status = 401
    runner = CliRunner()
    result = runner.invoke(
        app, judge_args(server, b, "--concurrency", "1"), env={"OPENAI_API_KEY": KEY}
    )
    assert result.exit_code == 2
    assert "HTTP 401" in result.stderr and "after 1 attempt:" in result.stderr
    assert len(server.requests) == 1  # no retries, no further requests

    result = runner.invoke(app, ["eval", "judge", "--answers", str(b), "--base-url", server.url])
    assert result.exit_code == 2 and "--model: name the judge model" in result.stderr
    result = runner.invoke(app, judge_args(server, b, "--judge", "nope"))
    assert result.exit_code == 2 and "unknown judge 'nope'. Known judges:" in result.stderr
    bad = write_pairs(tmp_path / "bad.jsonl", [{"id": "x", "prompt": "q"}])
    result = runner.invoke(app, judge_args(server, bad))
    assert result.exit_code == 2 and f"{bad}:1: answer: missing field" in result.stderr
    a = write_pairs(tmp_path / "a.jsonl", [{"id": "other", "prompt": "q", "answer": "x [s=1]"}])
    result = runner.invoke(app, judge_args(server, b, "--baseline", str(a)))
    assert result.exit_code == 2 and "share no ids" in result.stderr


def test_changed_settings_do_not_mix_with_a_partial_file(
    server: FakeJudgeServer, tmp_path: Path
) -> None:
    b = answers_file(tmp_path / "b.jsonl", B_SCORES[:4], "B")
    server.fail = {"B 3 [s=5]"}
    runner = CliRunner()
    result = runner.invoke(app, judge_args(server, b, "--max-retries", "0", "--concurrency", "1"))
    assert result.exit_code == 1
    server.fail = set()
    result = runner.invoke(app, judge_args(server, b, "--model", "judge-2"))
    assert result.exit_code == 2 and "was started with other settings" in result.stderr
    result = runner.invoke(app, judge_args(server, b, "--model", "judge-2", "--restart"))
    assert result.exit_code == 0, result.stderr
    assert {m for *_, m in server.requests[-4:]} == {"judge-2"}


class ConstantJudgePlugin:
    """A third-party judge registered through the prefopt_judges hook."""

    @prefopt.hookimpl
    def prefopt_judges(self) -> list[JudgeSpec]:
        class Constant:
            def __init__(self, options: dict[str, Any]) -> None:
                self.value = float(options["value"])

            def score(self, item: Any) -> Judgment:
                return Judgment(self.value, f"constant for {item.id}")

        return [JudgeSpec("constant", "Always the same score.", Constant)]


def test_judges_are_plugins(tmp_path: Path) -> None:
    reset_registry()
    try:
        registry = get_registry()
        assert "openai" in registry.collect("prefopt_judges")
        registry.register(ConstantJudgePlugin(), PluginInfo("constant", "tests", "0"))
        b = answers_file(tmp_path / "b.jsonl", B_SCORES[:3], "B")
        result = CliRunner().invoke(
            app,
            ["eval", "judge", "--answers", str(b), "--judge", "constant", "--option", "value=4"],
        )
        assert result.exit_code == 0, result.stderr
        metrics = json.loads((tmp_path / "judge_results.json").read_text())["metrics"]
        assert metrics == {"answers": 3, "mean_factuality": 4.0, "hallucination_rate": 1.0}
    finally:
        reset_registry()


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 7, "explanation": "fine"}', 7.0),
        ('Here you go: {"score": 3, "explanation": "one error"} done', 3.0),
        ("Score: 8/10 because it is mostly right", 8.0),
        ("6", 6.0),
        ('{"score": "9"}', 9.0),
    ],
)
def test_parse_judgment(reply: str, score: float) -> None:
    assert parse_judgment(reply).score == score


@pytest.mark.parametrize("reply", ["no idea", '{"score": 11}', '{"score": "high"}', ""])
def test_parse_judgment_rejects(reply: str) -> None:
    with pytest.raises(JudgeError) as info:
        parse_judgment(reply)
    assert info.value.retryable
