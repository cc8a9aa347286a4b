"""The HTTP judge against a misbehaving OpenAI-style server on 127.0.0.1: retries and their
request counts, timeouts, closed connections, HTML bodies, key redaction, bad logprobs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mi_align.errors import InputError
from mi_align.evaluation.endpoint import EndpointConfig, retry_after_s
from mi_align.evaluation.judge import JudgeHTTPError, OpenAIJudge

KEY = "sk-live-9f8e7d6c5b4a39281706abcdef"
PLAIN_KEY = "hunter2-correct-horse-battery"  # matches no key pattern: only exact redaction helps
GOOD_TOP = [{"token": "90", "logprob": math.log(0.6)}, {"token": " 10", "logprob": math.log(0.3)},
            {"token": "CODE", "logprob": math.log(0.05)}]

Action = Callable[[BaseHTTPRequestHandler], None]


def completion(top: list) -> dict:
    """An OpenAI-style chat completion carrying ``top`` as the first token's top_logprobs."""
    return {"choices": [{"message": {"role": "assistant", "content": "90"},
                         "logprobs": {"content": [{"token": "90", "logprob": -0.5,
                                                   "top_logprobs": top}]}}]}


def reply(status: int = 200, body: bytes | str | dict | None = None,
          headers: dict[str, str] | None = None) -> Action:
    """An action answering ``status`` with ``body`` (a dict is sent as JSON)."""
    if body is None:
        body = completion(GOOD_TOP)
    data = json.dumps(body).encode() if isinstance(body, dict) else (
        body.encode() if isinstance(body, str) else body)

    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return act


def echo_auth(status: int, headers: dict[str, str] | None = None) -> Action:
    """A hostile error page that echoes the request's Authorization header and bare token."""

    def act(h: BaseHTTPRequestHandler) -> None:
        auth = h.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        reply(status, {"error": f"invalid credentials. Authorization: {auth}", "token": token,
                       "hint": f"you sent {token}"}, headers)(h)

    return act


def hang(h: BaseHTTPRequestHandler) -> None:
    h.server.release.wait(10)  # type: ignore[attr-defined]


def close(h: BaseHTTPRequestHandler) -> None:
    h.close_connection = True  # no status line at all


def trickle(h: BaseHTTPRequestHandler) -> None:
    """Headers at once, then one byte every 0.05 s: never idle long enough for a read timeout."""
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    try:
        for _ in range(1000):
            h.wfile.write(b" ")
            h.wfile.flush()
            if h.server.release.wait(0.05):  # type: ignore[attr-defined]
                return
    except OSError:
        return


class Server:
    """A scripted server: request i gets ``actions[i]`` (the last one repeats)."""

    def __init__(self, actions: list[Action]) -> None:
        self.actions, self.seen = actions, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.seen.append({"path": self.path, "body": body, **dict(self.headers)})
                owner.actions[min(len(owner.seen), len(owner.actions)) - 1](self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.release = threading.Event()  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.release.set()  # type: ignore[attr-defined]
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*actions: Action) -> Server:
        servers.append(Server(list(actions)))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def build_cfg(**overrides) -> EndpointConfig:
    """A fast config for tests: 10 ms backoff, waits capped at 0.5 s."""
    base = {"timeout_s": 2.0, "max_retries": 3, "backoff_s": 0.01, "max_wait_s": 0.5}
    base.update(overrides)
    return EndpointConfig(**base)


def judge(server: Server, **overrides) -> OpenAIJudge:
    return OpenAIJudge(server.url, "m", api_key_env="MI_TEST_JUDGE_KEY",
                       config=build_cfg(**overrides))


def assert_good(probs: list[dict[int, float]]) -> None:
    [p] = probs
    assert p.keys() == {90, 10}
    assert p[90] == pytest.approx(0.6) and p[10] == pytest.approx(0.3)


# 1. retries -------------------------------------------------------------------------------


def test_two_503_then_ok_succeeds_after_exactly_three_requests(serve) -> None:
    s = serve(reply(503, "overloaded"), reply(503, "overloaded"), reply())
    assert_good(judge(s).number_probs(["x"]))
    assert len(s.seen) == 3


def test_429_honours_retry_after_and_caps_it(serve) -> None:
    s = serve(reply(429, "slow down", {"Retry-After": "0.3"}), reply())
    t0 = time.monotonic()
    assert_good(judge(s, backoff_s=0.0).number_probs(["x"]))
    assert time.monotonic() - t0 >= 0.3 and len(s.seen) == 2

    s = serve(reply(429, "slow down", {"Retry-After": "3600"}), reply())
    t0 = time.monotonic()
    assert_good(judge(s, max_wait_s=0.05).number_probs(["x"]))
    assert time.monotonic() - t0 < 2.0 and len(s.seen) == 2


def test_retry_after_header_forms() -> None:
    assert retry_after_s("2") == 2.0 and retry_after_s("0.5") == 0.5
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("nan") is None and retry_after_s("-3") == 0.0


def test_gives_up_after_max_retries_with_status_and_body(serve) -> None:
    s = serve(reply(503, "<html><body><h1>503 Service Unavailable</h1></body></html>"))
    with pytest.raises(JudgeHTTPError) as err:
        judge(s, max_retries=2).number_probs(["x"])
    msg = str(err.value)
    assert len(s.seen) == 3
    assert f"{s.url}/chat/completions" in msg and "HTTP 503" in msg and "(3 attempts)" in msg
    assert "503 Service Unavailable" in msg and "<h1>" not in msg and "\n" not in msg


@pytest.mark.parametrize(("status", "n_requests"), [(400, 1), (401, 1), (404, 1), (422, 1),
                                                    (408, 2), (429, 2), (500, 2), (502, 2)])
def test_only_408_429_and_5xx_are_retried(serve, status, n_requests) -> None:
    s = serve(reply(status, "nope"), reply(status, "nope"))
    with pytest.raises(JudgeHTTPError, match=f"HTTP {status}"):
        judge(s, max_retries=1).number_probs(["x"])
    assert len(s.seen) == n_requests


def test_zero_retries_means_one_request(serve) -> None:
    s = serve(reply(503, "busy"), reply())
    with pytest.raises(JudgeHTTPError, match="HTTP 503"):
        judge(s, max_retries=0).number_probs(["x"])
    assert len(s.seen) == 1


# 2. timeouts ------------------------------------------------------------------------------


def test_hanging_endpoint_times_out_after_retries(serve) -> None:
    s = serve(hang)
    t0 = time.monotonic()
    with pytest.raises(JudgeHTTPError) as err:
        judge(s, timeout_s=0.3, max_retries=1).number_probs(["x"])
    assert time.monotonic() - t0 < 3.0
    msg = str(err.value)
    assert f"{s.url}/chat/completions" in msg and "timed out after 0.3 s (2 attempts)" in msg
    assert "--judge-timeout" in msg and len(s.seen) == 2


def test_trickling_endpoint_hits_the_wall_clock_deadline(serve) -> None:
    s = serve(trickle)
    t0 = time.monotonic()
    with pytest.raises(JudgeHTTPError, match=r"timed out after 0\.3 s"):
        judge(s, timeout_s=0.3, max_retries=0).number_probs(["x"])
    assert time.monotonic() - t0 < 3.0


def test_timeout_then_ok_is_retried(serve) -> None:
    s = serve(hang, reply())
    assert_good(judge(s, timeout_s=0.3).number_probs(["x"]))
    assert len(s.seen) == 2


def test_config_checks_its_values() -> None:
    for bad in ({"timeout_s": 0.0}, {"timeout_s": float("nan")}, {"max_retries": -1},
                {"backoff_s": -1.0}, {"max_wait_s": float("inf")}):
        with pytest.raises(InputError):
            build_cfg(**bad)
    assert EndpointConfig.from_dict(build_cfg().to_dict()) == build_cfg()
    with pytest.raises(InputError, match="http"):
        OpenAIJudge("localhost:8000", "m")


# 3. closed connections and non-JSON bodies ---------------------------------------------------


def test_closed_connection_is_retried_then_named(serve) -> None:
    s = serve(close, close, reply())
    assert_good(judge(s).number_probs(["x"]))
    assert len(s.seen) == 3

    s = serve(close)
    with pytest.raises(JudgeHTTPError) as err:
        judge(s, max_retries=1).number_probs(["x"])
    msg = str(err.value)
    assert f"{s.url}/chat/completions" in msg and "connection closed" in msg
    assert len(s.seen) == 2


@pytest.mark.parametrize(("body", "expect"), [
    ("<!DOCTYPE html><html><title>Bad Gateway</title><p>nginx</p></html>", "Bad Gateway nginx"),
    ("", "empty body"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ("[1, 2]", "JSON is a list"),
])
def test_non_json_200_names_endpoint_status_and_excerpt(serve, body, expect) -> None:
    s = serve(reply(200, body, {"Content-Type": "text/html"}))
    with pytest.raises(JudgeHTTPError) as err:
        judge(s).number_probs(["x"])
    msg = str(err.value)
    assert f"{s.url}/chat/completions" in msg and "HTTP 200" in msg and expect in msg
    assert len(s.seen) == 1 and len(msg) < 600 and "\n" not in msg


def test_huge_body_is_refused(serve) -> None:
    s = serve(reply(200, "x" * (5 * 2**20)))
    with pytest.raises(JudgeHTTPError, match="larger than 4 MiB"):
        judge(s).number_probs(["x"])


def test_redirect_is_not_followed(serve) -> None:
    s = serve(reply(307, "", {"Location": "http://127.0.0.1:9/elsewhere"}))
    with pytest.raises(JudgeHTTPError, match="redirects are not followed"):
        judge(s).number_probs(["x"])
    assert len(s.seen) == 1


# 4. the API key never reaches the user ------------------------------------------------------


def _cli(server: Server, key: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MI_TEST_JUDGE_KEY": key, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mi_align.cli", "judge", "--check-only", "--judge-url",
           server.url, "--judge-name", "m", "--api-key-env", "MI_TEST_JUDGE_KEY", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("key", [KEY, PLAIN_KEY])
def test_401_echoing_the_key_is_redacted_on_stderr(serve, key) -> None:
    # The 503 (retried, so logged) and the 401 both echo the Authorization header and token.
    s = serve(echo_auth(503, {"Retry-After": "0"}), echo_auth(401))
    res = _cli(s, key, "--judge-retries", "2")
    assert s.seen[0]["Authorization"] == f"Bearer {key}"  # it was sent ...
    assert key not in res.stdout + res.stderr  # ... and never shown
    assert key[:12] not in res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1, res.stderr
    assert last.startswith(f"error: judge endpoint {s.url}/chat/completions: HTTP 401")
    assert "[redacted]" in last and "API key in $MI_TEST_JUDGE_KEY" in last
    assert "retry 1/2" in res.stderr and len(s.seen) == 2


@pytest.mark.parametrize("key", [KEY, PLAIN_KEY])
def test_key_is_in_no_written_file(serve, key, tmp_path) -> None:
    """A judge run that succeeds and writes its results: the key was sent on every request and
    appears in nothing written (every file under the output folder, read as bytes) nor in the
    console."""
    s = serve(reply())
    out = tmp_path / "check" / "judge_check.json"
    res = _cli(s, key, "--out", str(out))
    assert len(s.seen) >= 24 and all(r["Authorization"] == f"Bearer {key}" for r in s.seen)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert out in written, res.stderr  # the check's JSON was written (whatever its verdict)
    for path in written:
        data = path.read_bytes()
        assert key.encode() not in data and key[:12].encode() not in data, path
    assert key not in res.stdout + res.stderr


def test_url_credentials_are_sent_as_auth_not_shown(serve) -> None:
    s = serve(reply(500, "boom"))
    url = s.url.replace("http://", "http://alice:pa55word-xyz@")
    j = OpenAIJudge(url, "m", api_key_env="MI_TEST_UNSET_KEY", config=build_cfg(max_retries=0))
    with pytest.raises(JudgeHTTPError) as err:
        j.number_probs(["x"])
    assert "pa55word" not in str(err.value) + j.name
    assert s.seen[0]["Authorization"].startswith("Basic ")


# 5. logprobs are checked ----------------------------------------------------------------------


@pytest.mark.parametrize(("top", "field", "problem"), [
    ([{"token": "90", "logprob": 3.3}], "top_logprobs[0].logprob = 3.3", "is positive"),
    ([{"token": "1", "logprob": -1}, {"token": "90", "logprob": "-0.1"}],
     "top_logprobs[1].logprob = '-0.1'", "is not a number"),
    ([{"token": "90", "logprob": True}], "top_logprobs[0].logprob = True", "is not a number"),
    ([{"token": "90"}], "top_logprobs[0].logprob = None", "is not a number"),
    ([{"token": 90, "logprob": -1}], "top_logprobs[0].token = 90", "is not a string"),
    (["90"], "top_logprobs[0] = '90'", "is not an object"),
    ([], "top_logprobs = []", "is not a non-empty list"),
    ([{"token": str(n), "logprob": -0.01} for n in range(30)], "the 30 choices[0].logprobs.content[0].top_logprobs",
     "sum to probability 29.7 > 1"),
])
def test_bad_logprobs_are_rejected_naming_field_and_value(serve, top, field, problem) -> None:
    s = serve(reply(200, completion(top)))
    with pytest.raises(JudgeHTTPError) as err:
        judge(s).number_probs(["x", "y", "z"])
    msg = str(err.value)
    assert f"{s.url}/chat/completions" in msg and field in msg and problem in msg, msg
    assert len(s.seen) == 1  # checked as it arrives: no further requests to a broken server


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400])
def test_non_finite_logprobs_are_rejected(serve, literal) -> None:
    body = json.dumps(completion([{"token": "90", "logprob": -1.0}])).replace("-1.0", literal)
    s = serve(reply(200, body))
    with pytest.raises(JudgeHTTPError, match=r"top_logprobs\[0\]\.logprob = .* is not finite"):
        judge(s).number_probs(["x"])


def test_missing_logprobs_names_the_path(serve) -> None:
    s = serve(reply(200, {"choices": [{"message": {"content": "90"}, "logprobs": None}]}))
    with pytest.raises(JudgeHTTPError, match=r"no choices\[0\]\.logprobs\.content\[0\]"):
        judge(s).number_probs(["x"])


def test_rounding_noise_and_odd_digit_tokens_are_tolerated(serve) -> None:
    top = [{"token": "100", "logprob": 1e-6}, {"token": "²", "logprob": -9.0},
           {"token": "007", "logprob": -9999.0}, {"token": "1000", "logprob": -9.0}]
    s = serve(reply(200, completion(top)))
    [p] = judge(s).number_probs(["x"])
    assert p[100] == pytest.approx(1.0) and set(p) == {100, 7}


def test_request_asks_for_logprobs_and_timeout_flag_reaches_the_judge(serve) -> None:
    from mi_align.cli import steering as steering_cli
    from mi_align.cli.main import build_parser

    s = serve(reply())
    args = build_parser().parse_args(["judge", "--judge-url", s.url, "--judge-name", "m",
                                      "--judge-timeout", "7.5", "--judge-retries", "1"])
    backend = steering_cli._judge_backend(args)
    assert backend.endpoint.config.timeout_s == 7.5 and backend.endpoint.config.max_retries == 1
    assert_good(backend.number_probs(["x"]))
    body = s.seen[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert s.seen[0]["path"] == "/v1/chat/completions"


def test_a_digit_by_digit_tokenizer_fails_the_check_and_says_why(serve) -> None:
    """Single-digit number tokens only (a Qwen / Gemma judge) read from the first token: the
    scores would be first digits, so the check fails with the reason; whole-number tokens
    ("90") raise no flag. (The default mode reads such a judge digit by digit instead, which
    raises no flag either: tests/test_judge_digits.py.)"""
    from mi_align.evaluation.judge_check import FIRST_DIGIT_ONLY, JudgeCheck, check_judge

    digits = [{"token": "9", "logprob": math.log(0.6)}, {"token": "1", "logprob": math.log(0.3)}]
    j = OpenAIJudge(serve(reply(body=completion(digits))).url, "m",
                    api_key_env="MI_TEST_UNSET_KEY", config=build_cfg(),
                    number_mode="first-token")
    check = check_judge(j)
    assert j.first_digit_only and check.limitation == FIRST_DIGIT_ONLY
    assert not check.passes and check.verdict().endswith(FIRST_DIGIT_ONLY)
    assert JudgeCheck.from_dict(check.to_dict()).limitation == FIRST_DIGIT_ONLY
    whole = OpenAIJudge(serve(reply()).url, "m", api_key_env="MI_TEST_UNSET_KEY",
                        config=build_cfg())
    assert check_judge(whole).limitation is None and not whole.first_digit_only
    perfect = {"judge": "j", "rows": (), "alignment_auroc": 1.0, "alignment_gap": 90.0,
               "coherence_auroc": 1.0, "coherence_gap": 90.0, "scored_fraction": 1.0}
    assert JudgeCheck(**perfect).passes
    assert not JudgeCheck(**perfect, limitation=FIRST_DIGIT_ONLY).passes
