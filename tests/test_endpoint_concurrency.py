"""``ChatEndpoint.complete_all`` with several requests in flight, against a threaded local
server that answers each payload by its index: order, the in-flight bound, failing fast,
retries under concurrency and the ``max_concurrency`` config field."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mi_align.errors import InputError
from mi_align.evaluation.endpoint import ChatEndpoint, EndpointConfig, JudgeHTTPError


@dataclass(frozen=True)
class Answer:
    """What the server does with one request: wait ``delay_s``, then reply."""

    status: int = 200
    delay_s: float = 0.0
    body: str | None = None  # None: ``{"i": <index>}`` as JSON
    headers: dict[str, str] = field(default_factory=dict)


# (payload index, how many times this index was seen before) -> what to answer
Script = Callable[[int, int], Answer]


class Server:
    """Records when each request arrives and leaves and how many are in flight at once."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.lock = threading.Lock()
        self.arrived: list[int] = []  # payload indices, in arrival order
        self.replied: list[int] = []  # payload indices, in reply order
        self.in_flight = self.max_in_flight = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                i = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["i"]
                with owner.lock:
                    answer = owner.script(i, owner.arrived.count(i))
                    owner.arrived.append(i)
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                time.sleep(answer.delay_s)
                # Leave the in-flight count before replying: once the reply is out the client
                # may start the next request before this thread would get to decrement.
                with owner.lock:
                    owner.in_flight -= 1
                    owner.replied.append(i)
                data = (json.dumps({"i": i}) if answer.body is None else answer.body).encode()
                self.send_response(answer.status)
                for k, v in {"Content-Type": "application/json", **answer.headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def serve() -> Iterator[Callable[[Script], Server]]:
    servers: list[Server] = []

    def start(script: Script) -> Server:
        servers.append(Server(script))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def build_cfg(**overrides) -> EndpointConfig:
    """A fast config for tests: 10 ms backoff, waits capped at 0.5 s."""
    base = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01, "max_wait_s": 0.5}
    base.update(overrides)
    return EndpointConfig(**base)


def run(server: Server, n: int, **overrides) -> list[int]:
    """The indices echoed back for payloads ``{"i": 0} ... {"i": n - 1}``."""
    ep = ChatEndpoint(server.url, build_cfg(**overrides), api_key_env="MI_TEST_UNSET_KEY")
    return ep.complete_all([{"i": i} for i in range(n)], lambda data: data["i"])


def test_results_follow_payload_order_when_replies_do_not(serve) -> None:
    n = 6
    s = serve(lambda i, _: Answer(delay_s=0.04 * (n - i)))  # later payloads answer sooner
    assert run(s, n, max_concurrency=n) == list(range(n))
    assert s.replied != sorted(s.replied)  # the replies really came back out of order


def test_requests_overlap_up_to_max_concurrency(serve) -> None:
    s = serve(lambda i, _: Answer(delay_s=0.2))
    t0 = time.monotonic()
    assert run(s, 8, max_concurrency=4) == list(range(8))
    # 1.6 s one at a time; 0.6 s here (the first request alone, then two waves of four),
    # plus connection set-up on a busy machine.
    assert time.monotonic() - t0 < 0.9
    assert s.max_in_flight == 4


def test_max_concurrency_one_sends_one_at_a_time(serve) -> None:
    s = serve(lambda i, _: Answer(delay_s=0.02))
    assert run(s, 5, max_concurrency=1) == list(range(5))
    assert s.max_in_flight == 1 and s.arrived == list(range(5))


def test_non_retryable_failure_stops_the_run(serve) -> None:
    n, bad = 20, 3
    s = serve(lambda i, _: Answer(400, body="bad request #3") if i == bad
              else Answer(delay_s=0.05))
    t0 = time.monotonic()
    with pytest.raises(JudgeHTTPError) as err:
        run(s, n, max_concurrency=2)
    msg = str(err.value)
    assert msg.startswith(f"judge endpoint {s.url}/chat/completions: HTTP 400")
    assert "bad request #3" in msg and "\n" not in msg
    assert not isinstance(err.value, ExceptionGroup)
    after = s.arrived[s.arrived.index(bad) + 1:]
    assert len(after) <= 2 < n - bad - 1  # at most a window's worth, far from all the rest
    assert time.monotonic() - t0 < 1.0


def test_a_failure_cuts_short_other_requests_retry_waits(serve) -> None:
    # Payload 1 is told to come back in 5 s; payload 2 fails for good meanwhile.
    s = serve(lambda i, _: Answer(503, headers={"Retry-After": "5"}) if i == 1
              else Answer(404, delay_s=0.1) if i == 2 else Answer())
    t0 = time.monotonic()
    with pytest.raises(JudgeHTTPError, match="HTTP 404"):
        run(s, 3, max_concurrency=2, max_wait_s=5.0)
    assert time.monotonic() - t0 < 2.0
    assert s.arrived.count(1) == 1  # never retried after the run stopped


def test_429_with_retry_after_is_retried_per_request(serve) -> None:
    s = serve(lambda i, seen: Answer(429, body="slow down", headers={"Retry-After": "0"})
              if i == 2 and seen == 0 else Answer())
    assert run(s, 4, max_concurrency=4) == [0, 1, 2, 3]
    assert s.arrived.count(2) == 2 and len(s.arrived) == 5


def test_exhausted_retries_raise_that_requests_error(serve) -> None:
    s = serve(lambda i, _: Answer(503, body="down") if i == 4 else Answer())
    with pytest.raises(JudgeHTTPError, match=r"HTTP 503.*down.*\(3 attempts\)"):
        run(s, 6, max_concurrency=3)
    assert s.arrived.count(4) == 3


def test_first_request_goes_alone(serve) -> None:
    # A broken server (wrong URL, no logprobs) costs one request, not max_concurrency.
    s = serve(lambda i, _: Answer(404, body="no such route"))
    with pytest.raises(JudgeHTTPError, match="HTTP 404"):
        run(s, 10, max_concurrency=8)
    assert s.arrived == [0]


def test_parse_errors_stop_the_run_and_keep_their_type(serve) -> None:
    s = serve(lambda i, _: Answer())
    ep = ChatEndpoint(s.url, build_cfg(max_concurrency=2), api_key_env="MI_TEST_UNSET_KEY")

    def parse(data: dict) -> int:
        if data["i"] == 5:
            raise ep.fail("bad response: payload 5")
        return data["i"]

    with pytest.raises(JudgeHTTPError, match="bad response: payload 5"):
        ep.complete_all([{"i": i} for i in range(30)], parse)
    assert len(s.arrived) < 10


@pytest.mark.parametrize("bad", [0, -1, True])  # wrong types: beartype stops them in tests
def test_max_concurrency_is_checked(bad) -> None:
    with pytest.raises(InputError) as err:
        build_cfg(max_concurrency=bad)
    msg = str(err.value)
    assert msg.startswith(f"judge endpoint config: max_concurrency={bad!r}: must be an integer")
    assert "\n" not in msg


def test_config_round_trips_and_reads_older_dicts() -> None:
    cfg = build_cfg(max_concurrency=3)
    assert cfg.to_dict()["max_concurrency"] == 3
    assert EndpointConfig.from_dict(cfg.to_dict()) == cfg
    old = {"timeout_s": 30.0, "max_retries": 2, "backoff_s": 1.0, "max_wait_s": 60.0}
    assert EndpointConfig.from_dict(old).max_concurrency == EndpointConfig().max_concurrency == 8
