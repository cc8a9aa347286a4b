"""Exact number probabilities from an endpoint: a judge with a planted answer distribution,
served on 127.0.0.1 by a tokenizer that writes numbers digit by digit (Qwen, Gemma) or as whole
tokens (Llama 3, GPT-4o), answering each request from the partial answer it continues."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mi_align.errors import InputError
from mi_align.evaluation.judge import JudgeHTTPError, OpenAIJudge, expected_score
from mi_align.evaluation.judge_check import (
    CHECK_ANSWERS,
    CONTINUATION_IGNORED,
    FIRST_DIGIT_ONLY,
    KINDS,
    JudgeCheck,
    cached_check,
    check_judge,
)
from tests.test_faults_judge import build_cfg, completion

END = "<|im_end|>"  # what the judge writes after a whole answer: not a digit
PLANTED = {"57": 0.5, "5": 0.1, "100": 0.15, "10": 0.1, "7": 0.05, "CODE": 0.1}
NUMBERS = {int(a): p for a, p in PLANTED.items() if a.isdigit()}
Tokenize = Callable[[str], list[str]]


def digit_tokens(answer: str) -> list[str]:
    return list(answer) if answer.isdigit() else [answer]


def whole_tokens(answer: str) -> list[str]:
    return [answer]


def next_tokens(dist: dict[str, float], tokenize: Tokenize, prefix: str) -> list[dict]:
    """The top list after ``prefix``: P(next token | prefix) under ``dist`` written by
    ``tokenize`` (the end of an answer is :data:`END`), most probable first."""
    mass: dict[str, float] = {}
    for answer, p in dist.items():
        toks = tokenize(answer)
        for k in range(len(toks) + 1):
            if "".join(toks[:k]) == prefix:
                token = toks[k] if k < len(toks) else END
                mass[token] = mass.get(token, 0.0) + p
                break
    total = sum(mass.values())
    if not total:
        return [{"token": END, "logprob": 0.0}]
    return [{"token": t, "logprob": math.log(q / total)}
            for t, q in sorted(mass.items(), key=lambda kv: -kv[1])]


class Planted:
    """A judge server: ``dist_for(prompt)`` is the planted answer distribution, written by
    ``tokenize``. ``refuse``: answer continuation requests with that status instead;
    ``ignore``: answer them as a server ignoring ``continue_final_message`` would (after a
    closed turn: a new turn starts); ``jitter``: sleep up to 3 ms, so answers finish out of
    order."""

    def __init__(self, tokenize: Tokenize, dist_for: Callable[[str], dict[str, float]],
                 refuse: int | None = None, ignore: bool = False, jitter: bool = False) -> None:
        self.seen: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.seen.append(body)
                status, out = owner.answer(body)
                if jitter:
                    time.sleep(random.random() * 0.003)
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.tokenize, self.dist_for = tokenize, dist_for
        self.refuse, self.ignore = refuse, ignore
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, body: dict) -> tuple[int, dict]:
        msgs = body["messages"]
        cont = body.get("continue_final_message", False)
        if cont and self.refuse:
            return self.refuse, {"error": {"message": "Unrecognized request argument supplied: "
                                           "continue_final_message"}}
        if cont and (body.get("add_generation_prompt", True) or msgs[-1]["role"] != "assistant"):
            return 400, {"error": "continue_final_message needs add_generation_prompt false"}
        if cont and self.ignore:
            return 200, completion([{"token": "<|im_start|>", "logprob": math.log(0.97)},
                                    {"token": "\n", "logprob": math.log(0.03)}])
        prefix = msgs[-1]["content"] if cont else ""
        return 200, completion(next_tokens(self.dist_for(msgs[0]["content"]), self.tokenize,
                                           prefix))

    def prefixes(self) -> list[str]:
        """The partial answers continued, in the order the requests arrived."""
        return [b["messages"][-1]["content"] for b in self.seen if b.get("continue_final_message")]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def planted() -> Iterator[Callable[..., Planted]]:
    servers: list[Planted] = []

    def start(tokenize: Tokenize = digit_tokens, dist_for=lambda prompt: PLANTED,
              **kw) -> Planted:
        servers.append(Planted(tokenize, dist_for, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def build_judge(server: Planted, **overrides) -> OpenAIJudge:
    cfg = build_cfg(**overrides.pop("cfg", {}))
    return OpenAIJudge(server.url, "m", api_key_env="MI_TEST_UNSET_KEY", config=cfg,
                       **overrides)


def assert_probs(got: dict[int, float], want: dict[int, float]) -> None:
    """Equal up to float error, numbers of (near) zero probability counting as absent."""
    assert {n for n, p in got.items() if p > 1e-12} == set(want), got
    for n, p in want.items():
        assert got[n] == pytest.approx(p, rel=1e-9, abs=1e-12), n


def naive_score(dist: dict[str, float]) -> float:
    numbers = {int(a): p for a, p in dist.items() if a.isdigit()}
    return sum(n * p for n, p in numbers.items()) / sum(numbers.values())


# 1. exact numbers, digit by digit or whole ----------------------------------------------------


def test_digit_tokenizer_recovers_every_planted_probability(planted) -> None:
    s = planted(digit_tokens)
    j = build_judge(s)
    [read] = j.read_numbers(["rate this"])
    assert_probs(read.probs, NUMBERS)
    assert expected_score(read.probs).value == pytest.approx(naive_score(PLANTED))
    assert expected_score(read.probs).number_mass == pytest.approx(0.9)
    # 1 first request + "5", "1", "7" + "57", "10" + "100" (each number's end step included).
    assert read.stepped and read.requests == 7 and len(s.seen) == 7 and read.unexpanded == 0.0
    assert sorted(s.prefixes()) == ["1", "10", "100", "5", "57", "7"]
    assert not j.first_digit_only and not j.continuation_ignored


def test_whole_number_tokenizer_gives_the_same_numbers(planted) -> None:
    s = planted(whole_tokens)
    j = build_judge(s)  # auto: "57" and "100" are tokens, so the first token is read
    [read] = j.read_numbers(["rate this"])
    assert_probs(read.probs, NUMBERS)
    assert not read.stepped and read.requests == 1 and len(s.seen) == 1

    s = planted(whole_tokens)
    [read] = build_judge(s, number_mode="digits").read_numbers(["rate this"])
    assert_probs(read.probs, NUMBERS)  # each number token then its end step: 1 + 5 requests
    assert read.stepped and read.requests == 6 and len(s.seen) == 6
    assert sorted(s.prefixes()) == ["10", "100", "5", "57", "7"]


def test_first_token_mode_reads_first_digits_as_before(planted) -> None:
    s = planted(digit_tokens)
    j = build_judge(s, number_mode="first-token")
    [read] = j.read_numbers(["rate this"])
    assert_probs(read.probs, {5: 0.6, 1: 0.25, 7: 0.05})  # first digits, not numbers
    assert read.requests == 1 and len(s.seen) == 1 and j.first_digit_only
    body = s.seen[0]
    assert "continue_final_message" not in body and len(body["messages"]) == 1
    assert j.name.endswith("+numbers:first-token") and build_judge(s).name == f"openai:m@{s.url}"


def test_continuation_requests_ask_vllm_to_continue_the_answer(planted) -> None:
    s = planted(digit_tokens)
    build_judge(s).read_numbers(["rate this"])
    first, *rest = s.seen
    assert first["messages"] == [{"role": "user", "content": "rate this"}]
    for body in rest:
        user, assistant = body["messages"]
        assert user == first["messages"][0] and assistant["role"] == "assistant"
        assert body["add_generation_prompt"] is False and body["continue_final_message"] is True
        assert body["max_tokens"] == 1 and body["logprobs"] is True
        assert body["top_logprobs"] == 20


def test_many_prompts_concurrently_stay_in_order_level_by_level(planted) -> None:
    def dist_for(prompt: str) -> dict[str, float]:
        k = int(prompt.removeprefix("p"))
        return {str(5 * k): 0.6, str(100 - k): 0.3, "CODE": 0.1}

    s = planted(digit_tokens, dist_for, jitter=True)
    j = build_judge(s, cfg={"max_concurrency": 8})
    prompts = [f"p{k}" for k in range(21)]
    reads = j.read_numbers(prompts)
    for prompt, read in zip(prompts, reads, strict=True):
        want: dict[int, float] = {}
        for a, p in dist_for(prompt).items():
            if a.isdigit():
                want[int(a)] = want.get(int(a), 0.0) + p
        assert_probs(read.probs, want)
        assert expected_score(read.probs).value == pytest.approx(naive_score(dist_for(prompt)))
    assert sum(r.requests for r in reads) == len(s.seen)
    # Level by level: every first request, then all one-digit prefixes, then two, then three.
    firsts = [b for b in s.seen if not b.get("continue_final_message")]
    assert s.seen[: len(prompts)] == firsts
    depths = [len(p) for p in s.prefixes()]
    assert depths == sorted(depths) and set(depths) == {1, 2, 3}


def test_prefixes_below_the_threshold_are_not_expanded(planted) -> None:
    s = planted(digit_tokens)
    j = build_judge(s, min_prefix_prob=0.2)
    [read] = j.read_numbers(["rate this"])
    # "7" (0.05) and "100" (0.15) are below 0.2: never continued, their mass reported.
    assert_probs(read.probs, {57: 0.5, 5: 0.1, 10: 0.1})
    assert read.unexpanded == pytest.approx(0.2) and j.max_unexpanded == pytest.approx(0.2)
    assert read.requests == 5 and sorted(s.prefixes()) == ["1", "10", "5", "57"]
    assert "up to 0.2 left unexpanded" in j.number_reading
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="min_prefix_prob"):
            build_judge(s, min_prefix_prob=bad)
    with pytest.raises(InputError, match="auto, first-token, digits"):
        build_judge(s, number_mode="exact")


# 2. endpoints that cannot continue an answer ----------------------------------------------------


def _check_dist(prompt: str) -> dict[str, float]:
    """Clear judgements of the check answers: numbers a first-digit reading gets wrong."""
    kind = next((k for q in CHECK_ANSWERS.values() for k, a in zip(KINDS, q, strict=True)
                 if a in prompt), None)
    if kind is None:
        return PLANTED
    if "Rate only how coherent" in prompt:
        return {"90": 0.9, "CODE": 0.1} if kind != "incoherent" else {"5": 0.9, "CODE": 0.1}
    return {"aligned": {"95": 0.6, "100": 0.3}, "misaligned": {"5": 0.5, "10": 0.4},
            "incoherent": {"50": 0.9}}[kind]


def test_digit_judge_passes_the_check_when_read_digit_by_digit(planted) -> None:
    s = planted(digit_tokens, _check_dist)
    j = build_judge(s)
    check = check_judge(j)
    assert check.passes and check.limitation is None, check.verdict()
    assert check.alignment_gap == pytest.approx((0.6 * 95 + 0.3 * 100) / 0.9
                                                 - (0.5 * 5 + 0.4 * 10) / 0.9)
    assert check.numbers == "auto (48 digit by digit)" and "numbers read auto" in check.verdict()
    assert JudgeCheck.from_dict(check.to_dict()).numbers == check.numbers
    # The same judge read from first tokens: 9 vs 5 and 1 (of 100), so the check fails.
    first = check_judge(build_judge(planted(digit_tokens, _check_dist),
                                    number_mode="first-token"))
    assert not first.passes and first.limitation == FIRST_DIGIT_ONLY


@pytest.mark.parametrize("status", [400, 422])
def test_a_server_refusing_continuation_fails_the_check_with_first_digit_only(
        planted, status) -> None:
    s = planted(digit_tokens, _check_dist, refuse=status)
    j = build_judge(s)
    check = check_judge(j)  # nothing raises: read from first tokens, as before
    assert not check.passes and check.limitation == FIRST_DIGIT_ONLY
    assert check.verdict().endswith(FIRST_DIGIT_ONLY) and j.first_digit_only
    # Probed once (the first continuation request), then never asked again.
    assert len(s.prefixes()) == 1 and len(s.seen) == 48 + 1
    assert check.numbers == "auto (48 first token)"
    [read] = j.read_numbers(["rate this"])
    assert not read.stepped and read.requests == 1


def test_other_errors_on_continuation_still_stop_the_run(planted) -> None:
    s = planted(digit_tokens, refuse=401)
    with pytest.raises(JudgeHTTPError, match="HTTP 401") as err:
        build_judge(s).read_numbers(["rate this"])
    assert err.value.status == 401


def test_a_server_ignoring_continuation_fails_the_check_and_says_why(planted) -> None:
    s = planted(digit_tokens, _check_dist, ignore=True)
    j = build_judge(s)
    check = check_judge(j)
    assert j.continuation_ignored and not j.first_digit_only
    assert not check.passes and check.limitation == CONTINUATION_IGNORED
    # A whole-number judge's numbers rarely continue: no such verdict for it.
    w = build_judge(planted(whole_tokens, _check_dist, ignore=True), number_mode="digits")
    assert check_judge(w).limitation is None and not w.continuation_ignored


def test_saved_check_from_before_number_modes_is_redone(planted, tmp_path) -> None:
    s = planted(digit_tokens, _check_dist)
    j = build_judge(s)
    path = tmp_path / "judge_check.json"
    old = {**check_judge(j).to_dict(), "limitation": FIRST_DIGIT_ONLY}
    del old["numbers"]  # as written before there was a choice
    path.write_text(json.dumps(old))
    n = len(s.seen)
    assert cached_check(j, path).limitation is None and len(s.seen) > n  # redone
    n = len(s.seen)
    assert cached_check(j, path).numbers is not None and len(s.seen) == n  # now reused
    assert JudgeCheck.from_dict(old).numbers is None  # and old files still load


def test_cli_flag_chooses_the_mode(planted) -> None:
    from mi_align.cli import steering as steering_cli
    from mi_align.cli.main import build_parser

    s = planted(digit_tokens)
    base = ["judge", "--judge-url", s.url, "--judge-name", "m"]
    backend = steering_cli._judge_backend(build_parser().parse_args(base))
    assert backend.number_mode == "auto"
    args = build_parser().parse_args([*base, "--judge-numbers", "first-token"])
    backend = steering_cli._judge_backend(args)
    assert backend.number_mode == "first-token" and backend.name.endswith("+numbers:first-token")
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--judge-numbers", "exact"])
