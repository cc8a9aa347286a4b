"""HTTP client for OpenAI-compatible judge endpoints: retries, timeouts, size caps, redaction.

A judge run sends thousands of small ``/chat/completions`` requests to a server the user does
not control (vLLM behind a proxy, a hosted API), so this module assumes the endpoint can
misbehave and turns every failure into one :class:`JudgeHTTPError` line that names the URL,
the HTTP status (if any; also kept as ``.status``) and a short excerpt of the body, with the
API key and anything that looks like a key redacted:

- 408, 429, 500, 502, 503 and 504, timeouts and connections closed mid-response are retried
  with exponential backoff (``backoff_s · 2^attempt``), honouring ``Retry-After``, each wait
  capped at ``max_wait_s``; other 4xx, refused connections and malformed bodies are not (they
  do not heal by waiting, and failing fast tells the user sooner);
- each attempt is limited by ``timeout_s``: httpx's connect/read/write timeouts, plus a
  wall-clock check while the body arrives (a server trickling one byte at a time cannot stall
  the run); bodies over :data:`MAX_BODY_BYTES` are refused;
- redirects are not followed, so the ``Authorization`` header never travels to another host;
- up to ``max_concurrency`` requests are in flight at once (threads sharing one thread-safe
  ``httpx.Client``), after a first request sent alone so a wrong URL, key or model costs one
  request and one error; answers come back in the order of the payloads, and the first
  failure stops the run: no new request starts, retry waits end, and the attempts already in
  flight finish (each within ``timeout_s``) before that failure's one-line error is raised.
  ``Retry-After`` is honoured by each request on its own, so ``max_concurrency`` is the knob
  that keeps a run within a server's rate or capacity limits;
- :func:`read_top_logprobs` checks every logprob is a finite number <= 0 before the judge
  turns it into a probability (a bad server could otherwise give a "probability mass" of 27).

Example:
    >>> ep = ChatEndpoint("http://127.0.0.1:8000/v1", EndpointConfig(timeout_s=30.0))
    ... # doctest: +SKIP
    >>> [top] = ep.complete_all([{"model": "m", "messages": [...], "logprobs": True}],
    ...                         lambda data: read_top_logprobs(ep, data))  # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import httpx

from mi_align.errors import InputError, RunFailure, redact

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BODY_BYTES = 4 * 2**20  # a top-20 logprob reply is ~2 KiB; anything this big is not one
EXCERPT_CHARS = 160
# Servers round logprobs; +1e-6 is float noise, not a probability above 1.
LOGPROB_TOLERANCE = 1e-4
MASS_TOLERANCE = 1e-3
# ``redact`` knows bearer tokens and api-key fields; other Authorization schemes (Basic, custom
# tokens) are echoed by some servers' error pages too.
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+(\s+[^\s\"',}]+)?")
_TAG = re.compile(r"<[^>]*>")


class JudgeHTTPError(RunFailure):
    """The judge endpoint failed, timed out or answered with something unusable.

    ``status`` is the HTTP status of the answer that failed (None when there was no answer, or
    the failure was in its body), so a caller can tell "this server refuses these parameters"
    (400, 422) from anything else without parsing the message.
    """

    def __init__(self, what: str, why: str = "", fix: str = "", status: int | None = None) -> None:
        super().__init__(what, why, fix)
        self.status = status


@dataclass(frozen=True)
class EndpointConfig:
    """How patiently to talk to a judge endpoint.

    Attributes:
        timeout_s: limit in seconds for each phase of one request (connect, send, wait for
            data) and for receiving the whole body.
        max_retries: retries after the first attempt for retryable failures (0: none).
        backoff_s: first wait between attempts; doubles each retry.
        max_wait_s: cap on any single wait, including a server's ``Retry-After``.
        max_concurrency: requests in flight at once (1: one at a time). Lower it to respect
            a server's rate limits or capacity: each request honours ``Retry-After`` on its
            own, so this, not the retry rules, bounds the load.
    """

    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_wait_s: float = 60.0
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        for name in ("timeout_s", "backoff_s", "max_wait_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value >= 0):
                raise InputError(f"judge endpoint config: {name}={value!r}",
                                 "must be a finite number of seconds >= 0")
        if self.timeout_s <= 0:
            raise InputError(f"judge endpoint config: timeout_s={self.timeout_s!r}",
                             "must be > 0", "pass --judge-timeout SECONDS, e.g. 60")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or (
                self.max_retries < 0):
            raise InputError(f"judge endpoint config: max_retries={self.max_retries!r}",
                             "must be an integer >= 0")
        if isinstance(self.max_concurrency, bool) or not isinstance(
                self.max_concurrency, int) or self.max_concurrency < 1:
            raise InputError(f"judge endpoint config: max_concurrency={self.max_concurrency!r}",
                             "must be an integer >= 1 (1 sends one request at a time)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EndpointConfig:
        return cls(**d)  # a field missing from an older saved dict takes its default


def clean(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` redacted, on one printable line, cut to :data:`EXCERPT_CHARS`."""
    text = text[:65536]
    if text.lstrip().startswith("<"):  # an HTML error page: the words are what matter
        text = _TAG.sub(" ", text)
    # Redact before truncating, so a key cut in half by the excerpt cannot escape the patterns.
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + "[redacted]", redact(text, tuple(secrets)))
    text = "".join(c if c.isprintable() else " " for c in " ".join(text.split()))
    return text[:EXCERPT_CHARS] + "..." if len(text) > EXCERPT_CHARS else text


def excerpt(raw: bytes, secrets: Sequence[str] = ()) -> str:
    """``body '<start of the body>'`` (redacted, one line) or ``empty body``, for messages."""
    text = clean(raw[:65536].decode("utf-8", "replace"), secrets)
    return f"body {text!r}" if text else "empty body"


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class _Failed:
    """One failed attempt: a one-line redacted reason and whether waiting may help."""

    why: str
    retry: bool
    wait_s: float | None = None  # the server's Retry-After
    fix: str = ""
    status: int | None = None  # the HTTP status, for an answer that was not 2xx


class _Stopped(Exception):
    """Raised in a worker told to stop during a retry wait; never leaves this module."""


class ChatEndpoint:
    """``POST {base_url}/chat/completions`` with the retry and safety rules of the module."""

    def __init__(self, base_url: str, config: EndpointConfig | None = None,
                 api_key_env: str = "OPENAI_API_KEY") -> None:
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            shown = re.sub(r"//[^/@]*@", "//[redacted]@", redact(str(base_url)))
            raise InputError(f"judge base URL {shown!r}",
                             "must start with http:// or https:// and name a host",
                             "pass e.g. --judge-url http://localhost:8000/v1")
        # Credentials in the URL go into an auth tuple so they never appear in a logged URL.
        self._auth = (url.username, url.password) if url.username or url.password else None
        self.base_url = str(url.copy_with(username=None, password=None)).rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.config = config or EndpointConfig()
        self.api_key_env = api_key_env

    def secrets(self) -> tuple[str, ...]:
        key = os.environ.get(self.api_key_env, "")
        return tuple(s for s in (key, *(self._auth or ())) if s)

    def fail(self, why: str, fix: str = "", status: int | None = None) -> JudgeHTTPError:
        """A :class:`JudgeHTTPError` naming this endpoint, with every part redacted."""
        s = self.secrets()
        return JudgeHTTPError(redact(f"judge endpoint {self.url}", s), redact(why, s),
                              redact(fix, s), status)

    def complete_all(self, payloads: Sequence[Mapping[str, Any]],
                     parse: Callable[[dict[str, Any]], T]) -> list[T]:
        """``parse`` of the JSON object answered to each payload, in the order of ``payloads``.

        The first payload is sent alone, the rest with up to ``config.max_concurrency`` in
        flight over one connection pool. ``parse`` runs in the calling thread as each answer
        arrives, so a bad server fails the first request, and any failure (an endpoint error,
        exhausted retries, or an exception from ``parse``) stops the run: no new request is
        started, workers waiting to retry give up, and the attempts in flight finish (each
        within ``timeout_s``) before that one exception is raised as is.

        Raises:
            JudgeHTTPError: the first request that failed, on one line.
        """
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        n, width = len(payloads), self.config.max_concurrency
        timeout = httpx.Timeout(self.config.timeout_s)
        # The pool must hold a connection per worker, or workers would queue for one and
        # time out on the pool instead of the server.
        limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
        with httpx.Client(timeout=timeout, limits=limits, auth=self._auth,
                          follow_redirects=False) as client:
            if n == 0:
                return []
            # Alone first: a wrong URL, key or model is then one request and one error, not
            # max_concurrency of them racing to be reported.
            first = parse(self._post(client, json.dumps(payloads[0]).encode(), headers))
            if n == 1:
                return [first]
            logger.debug("judge endpoint %s: %d requests, up to %d at a time", self.url, n,
                         width)
            done = self._fan_out(client, headers, payloads, parse, start=1)
            return [first, *(done[i] for i in range(1, n))]

    def _fan_out(self, client: httpx.Client, headers: dict[str, str],
                 payloads: Sequence[Mapping[str, Any]], parse: Callable[[dict[str, Any]], T],
                 start: int) -> dict[int, T]:
        """``{index: parse(answer)}`` for ``payloads[start:]``, keeping at most
        ``max_concurrency`` submitted at a time so a failure leaves nothing queued."""
        stop = threading.Event()
        results: dict[int, T] = {}
        todo = iter(range(start, len(payloads)))
        width = min(self.config.max_concurrency, len(payloads) - start)
        # Leaving the with-block waits for the attempts in flight; stop.set() (in finally)
        # has already cut short any retry wait, so that is at most one attempt each.
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="judge-http") as pool:
            pending: dict[Future[dict[str, Any]], int] = {}

            def submit() -> None:
                i = next(todo, None)
                if i is not None:
                    body = json.dumps(payloads[i]).encode()
                    pending[pool.submit(self._post, client, body, headers, stop)] = i

            try:
                for _ in range(width):
                    submit()
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    # Lowest index first, so two failures at once report the earlier payload.
                    for fut in sorted(finished, key=pending.__getitem__):
                        results[pending.pop(fut)] = parse(fut.result())
                        submit()
            finally:
                stop.set()
        return results

    def _post(self, client: httpx.Client, body: bytes, headers: dict[str, str],
              stop: threading.Event | None = None) -> dict[str, Any]:
        cfg = self.config
        for attempt in range(cfg.max_retries + 1):
            result = self._once(client, body, headers)
            if not isinstance(result, _Failed):
                return result
            if not result.retry or attempt == cfg.max_retries:
                tries = f" ({attempt + 1} attempts)" if attempt else ""
                raise self.fail(result.why + tries, result.fix, result.status)
            wait_s = cfg.backoff_s * 2**attempt if result.wait_s is None else result.wait_s
            wait_s = min(wait_s, cfg.max_wait_s)
            logger.warning("%s", redact(
                f"judge endpoint {self.url}: {result.why}; retry {attempt + 1}/"
                f"{cfg.max_retries} in {wait_s:.3g} s", self.secrets()))
            if stop is None:
                time.sleep(wait_s)
            elif stop.wait(wait_s):  # another request failed: the run is over
                raise _Stopped
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(self, client: httpx.Client, body: bytes,
              headers: dict[str, str]) -> dict[str, Any] | _Failed:
        timeout = self.config.timeout_s
        timed_out = _Failed(f"timed out after {timeout:g} s", True, fix=(
            "check the server is up and not overloaded, or allow more time with --judge-timeout"))
        start = time.monotonic()
        try:
            with client.stream("POST", self.url, content=body, headers=headers) as resp:
                raw = bytearray()
                for chunk in resp.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_BODY_BYTES:
                        return _Failed(f"HTTP {resp.status_code}: response larger than "
                                       f"{MAX_BODY_BYTES // 2**20} MiB", False,
                                       fix="is --judge-url a chat completions API?")
                    if time.monotonic() - start > timeout:
                        return timed_out
        except httpx.TimeoutException:
            return timed_out
        except httpx.ConnectError as exc:
            return _Failed(f"unreachable ({clean(str(exc))})", False,
                           fix="check --judge-url and that the server is running")
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            return _Failed("connection closed before a complete response "
                           f"({type(exc).__name__}: {clean(str(exc))})", True,
                           fix="check the server's logs; a proxy may be dropping connections")
        except httpx.HTTPError as exc:  # proxy, protocol and other transport errors
            return _Failed(f"request failed ({type(exc).__name__}: {clean(str(exc))})",
                           False, fix="check --judge-url and any HTTP(S)_PROXY settings")
        return self._parse(resp, bytes(raw))

    def _parse(self, resp: httpx.Response, raw: bytes) -> dict[str, Any] | _Failed:
        status = f"HTTP {resp.status_code} {clean(resp.reason_phrase)}".rstrip()
        shown = excerpt(raw, self.secrets())
        code = resp.status_code
        if code in RETRY_STATUS:
            return _Failed(f"{status}, {shown}", True, retry_after_s(resp.headers.get(
                "Retry-After")), fix="the server is overloaded or failing: retry later, or "
                "allow more retries with --judge-retries", status=code)
        if not 200 <= code < 300:
            fix = {401: f"check the API key in ${self.api_key_env} (--api-key-env)",
                   403: f"check the API key in ${self.api_key_env} has access to this model",
                   404: "check --judge-url (usually ends in /v1) and --judge-name"}.get(code, "")
            if 300 <= code < 400:
                fix = "redirects are not followed: pass the final URL as --judge-url"
            return _Failed(f"{status}, {shown}", False, fix=fix or "check --judge-url",
                           status=code)
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, absurd nesting
            return _Failed(f"{status} but the body is not JSON, {shown}", False,
                           fix="is --judge-url an OpenAI-compatible API (usually ends in /v1)?")
        if not isinstance(data, dict):
            return _Failed(f"{status} but the JSON is a {type(data).__name__}, not an object, "
                           f"{shown}", False, fix="is --judge-url an OpenAI-compatible API?")
        return data


def _bad(ep: ChatEndpoint, field: str, value: object, problem: str) -> JudgeHTTPError:
    return ep.fail(f"bad response: {field} = {clean(repr(value), ep.secrets())} {problem}",
                   "the server must return OpenAI-style logprobs (natural log, <= 0)")


def read_top_logprobs(ep: ChatEndpoint, data: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``(token, logprob)`` pairs of the first generated token, each checked to be finite and
    <= 0, and together to carry at most probability 1.

    Raises:
        JudgeHTTPError: naming the endpoint and the offending field and value.
    """
    where = "choices[0].logprobs.content[0].top_logprobs"
    try:
        top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ep.fail(f"the response has no {where} (got {clean(json.dumps(data), ep.secrets())})",
                      "serve a model with logprobs support (vLLM, or a hosted model that "
                      "accepts logprobs=true)") from None
    if not isinstance(top, list) or not top:
        raise _bad(ep, where, top, "is not a non-empty list")
    out: list[tuple[str, float]] = []
    for i, item in enumerate(top):
        field = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise _bad(ep, field, item, "is not an object")
        token, logprob = item.get("token"), item.get("logprob")
        if not isinstance(token, str):
            raise _bad(ep, f"{field}.token", token, "is not a string")
        if isinstance(logprob, bool) or not isinstance(logprob, int | float):
            raise _bad(ep, f"{field}.logprob", logprob, "is not a number")
        try:
            value = float(logprob)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise _bad(ep, f"{field}.logprob", logprob, "is not finite")
        if value > LOGPROB_TOLERANCE:
            raise _bad(ep, f"{field}.logprob", logprob, "is positive (a probability above 1)")
        out.append((token, min(value, 0.0)))
    total = sum(math.exp(lp) for _, lp in out)
    if total > 1.0 + MASS_TOLERANCE:
        raise ep.fail(f"bad response: the {len(out)} {where} entries sum to probability "
                      f"{total:.4g} > 1", "the server must return distinct tokens' logprobs")
    return out
