"""The judge behind an OpenAI-compatible endpoint: number probabilities from top logprobs.

:class:`OpenAIJudge` sends judge prompts to ``{base_url}/chat/completions`` (vLLM, hosted
APIs) through :mod:`mi_align.evaluation.endpoint` (concurrency, retries, timeouts, redaction)
and reads ``P(n)`` for the integers 0–100 from the first token's top list or, for tokenizers
that write numbers digit by digit, step by step over the digits (see the class docstring).
:mod:`mi_align.evaluation.judge` turns those probabilities into expected scores and re-exports
this class.

Example:
    >>> judge = OpenAIJudge("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-72B-Instruct")
    ... # doctest: +SKIP
    >>> judge.read_numbers(["Rate this answer 0-100: ..."])[0].requests  # doctest: +SKIP
    7
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from mi_align.errors import InputError
from mi_align.evaluation.endpoint import (
    ChatEndpoint,
    EndpointConfig,
    JudgeHTTPError,
    read_top_logprobs,
)

logger = logging.getLogger(__name__)

_NUMBER = re.compile(r"[0-9]{1,3}")

NUMBER_MODES = ("auto", "first-token", "digits")
MIN_STEP_PROB = 1e-4
# A digit-by-digit judge scoring 0–100 continues some first digit with a second one; below
# this, no continuation ever did, which means the server answered something else (see
# OpenAIJudge.continuation_ignored).
IGNORED_BELOW = 0.01
# Every prefix of a number 0..100 written canonically is itself one ("1" of "10" of "100"), so
# these are the valid texts of a partial answer too; "05" and "007" are not.
_CANONICAL = frozenset(str(n) for n in range(101))
_DIGITS = re.compile(r"[0-9]+")
_REFUSED = frozenset({400, 422})  # a server that does not know the continuation parameters


@dataclass(frozen=True)
class NumberRead:
    """One prompt's number probabilities from an endpoint, and what reading them cost.

    Attributes:
        probs: ``{n: P(n)}`` for the integers 0..100 seen.
        requests: requests whose answers were used (1: the first token only).
        stepped: read digit by digit (exact) rather than from the first token.
        unexpanded: probability on number prefixes below ``min_prefix_prob``, left out of
            ``probs`` (they count as no number).
    """

    probs: dict[int, float]
    requests: int = 1
    stepped: bool = False
    unexpanded: float = 0.0


class OpenAIJudge:
    """Any OpenAI-compatible chat endpoint (``{base_url}/chat/completions``) with logprobs.

    The API key is read from the environment variable ``api_key_env`` (may be unset for a
    local vLLM server). Retries, timeouts, redaction and response checks are those of
    :mod:`mi_align.evaluation.endpoint`; ``timeout`` (seconds), if given, overrides
    ``config.timeout_s``.

    ``number_mode`` says how ``P(n)`` is read (:meth:`read_numbers`):

    - ``"first-token"``: one request, integers 0–100 read from the first token's top list.
      Exact up to ``P(no further digit | n)`` for a tokenizer with whole-number tokens
      (Llama 3 and GPT-4o's tokenizers write up to three digits as one token, so "90" then
      "0" or "1" then "00" are not how they write 900 or 100, and trained models put next to
      nothing there); a digit-by-digit tokenizer (Qwen, Gemma) gives first digits instead.
    - ``"digits"``: exact for any tokenizer, as :class:`LocalJudge` over the token trie. The
      first token's number tokens that are canonical numbers 0..100 ("5", "10", not "05")
      start a search over text prefixes; each prefix with probability >= ``min_prefix_prob``
      costs one request continuing the partial answer (vLLM's ``continue_final_message``),
      whose top list gives ``P(end | prefix)`` = 1 − P(a token starting with a digit) and
      the digit tokens extending it. ``P(n)`` sums ``P(prefix) · P(end | prefix)`` over the
      paths spelling ``n``. Requests for all prompts go out level by level, concurrently.
      Prefixes below the threshold are left out (:attr:`NumberRead.unexpanded`). A prefix
      travels as text and the server re-tokenizes it, which is the path that wrote it for a
      digit tokenizer; a digit outside the ``top_logprobs`` list counts as an end.
    - ``"auto"`` (default): the first token when its number tokens include a multi-digit one
      (a whole-number tokenizer: one request), else digit by digit. A tokenizer with some
      multi-digit tokens but not all numbers as one token (GPT-2-style BPE) is only exact
      under ``"digits"``.

    A server that refuses the continuation parameters (400 or 422, e.g. a hosted API; probed
    with the first continuation request) is read from first tokens from then on, and
    :attr:`first_digit_only` tells the judge check if that gave first digits; one that
    silently ignores them is caught by :attr:`continuation_ignored`.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 top_logprobs: int = 20, timeout: float | None = None,
                 config: EndpointConfig | None = None, number_mode: str = "auto",
                 min_prefix_prob: float = MIN_STEP_PROB) -> None:
        if number_mode not in NUMBER_MODES:
            raise InputError(f"judge number mode {number_mode!r}",
                             f"must be one of {', '.join(NUMBER_MODES)}")
        if isinstance(min_prefix_prob, bool) or not isinstance(min_prefix_prob, int | float) \
                or not 0.0 <= min_prefix_prob <= 1.0:
            raise InputError(f"judge min_prefix_prob={min_prefix_prob!r}",
                             "must be a probability in [0, 1]")
        config = config or EndpointConfig()
        if timeout is not None:
            config = replace(config, timeout_s=timeout)
        self.endpoint = ChatEndpoint(base_url, config, api_key_env)
        self.base_url = self.endpoint.base_url  # without any user:password@ part
        self.model = model
        self.top_logprobs = top_logprobs
        self.number_mode = number_mode
        self.min_prefix_prob = float(min_prefix_prob)
        # Scores differ between modes for a digit tokenizer, so a judged file or a saved check
        # of one mode is not resumed by another.
        self.name = f"openai:{model}@{self.base_url}" + (
            "" if number_mode == "auto" else f"+numbers:{number_mode}")
        # What prompts read from their first token have shown of the judge's tokenizer: a
        # number token of several digits ("90") means numbers are whole tokens; only single
        # digits means the tokenizer writes numbers digit by digit (Qwen, Gemma), and the first
        # token's probabilities are the first digit's, not the number's.
        self._seen_digit = self._seen_multi_digit = False
        self._any_multi_digit = False  # in any first token's top list, however read
        self._continues: bool | None = None  # does the server continue a partial answer?
        self._expanded = 0
        self._max_further = 0.0
        self._reads = {"first token": 0, "digit by digit": 0}
        self.max_unexpanded = 0.0

    @property
    def first_digit_only(self) -> bool:
        """True once prompts read from their first token showed number tokens and every one
        was a single digit: the scores are then built from first digits, not exact numbers
        (the judge check says so)."""
        return self._seen_digit and not self._seen_multi_digit

    @property
    def continuation_ignored(self) -> bool:
        """True when a digit-by-digit tokenizer was stepped but no continuation ever put
        :data:`IGNORED_BELOW` on a further digit: a judge scoring 0–100 writes two-digit
        numbers, so the server most likely ignored ``continue_final_message`` (an older vLLM,
        a proxy that drops it) and answered after a closed turn; the scores are then first
        digits (the judge check says so)."""
        return (self._expanded > 0 and not self._any_multi_digit
                and self._max_further < IGNORED_BELOW)

    @property
    def number_reading(self) -> str:
        """The mode and how the prompts so far were read, for the judge check's verdict."""
        done = ", ".join(f"{n} {how}" for how, n in self._reads.items() if n)
        if self.max_unexpanded:
            done += f"; up to {self.max_unexpanded:.2g} left unexpanded"
        return f"{self.number_mode} ({done})" if done else self.number_mode

    def number_probs(self, prompts: Sequence[str]) -> list[dict[int, float]]:
        return [r.probs for r in self.read_numbers(prompts)]

    def read_numbers(self, prompts: Sequence[str]) -> list[NumberRead]:
        """Each prompt's number probabilities, read as ``number_mode`` says (see the class
        docstring); answers come back in the order of ``prompts``."""
        tops = self.endpoint.complete_all([self._payload(p) for p in prompts], self._top)
        self._any_multi_digit |= any(len(_number_text(t)) > 1 for top in tops for t, _ in top)
        steps = [self._steps(top) for top in tops]
        # None: the server refused to continue an answer, so first tokens, as before.
        stepped = self._step(prompts, tops, steps) or {}
        reads = [stepped.get(i) or self._first_token(top) for i, top in enumerate(tops)]
        for r in reads:
            self._reads["digit by digit" if r.stepped else "first token"] += 1
            self.max_unexpanded = max(self.max_unexpanded, r.unexpanded)
        return reads

    def _payload(self, prompt: str, prefix: str | None = None) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}]
        extra: dict[str, Any] = {}
        if prefix is not None:
            # vLLM's chat-completions extension (vllm-project/vllm#8942): the final assistant
            # message is rendered open, without its end-of-turn tokens, so the one token
            # generated is the next token of that same answer.
            messages.append({"role": "assistant", "content": prefix})
            extra = {"add_generation_prompt": False, "continue_final_message": True}
        return {"model": self.model, "messages": messages,
                "max_tokens": 1, "temperature": 0, "seed": 0,
                "logprobs": True, "top_logprobs": self.top_logprobs, **extra}

    def _top(self, data: dict[str, Any]) -> list[tuple[str, float]]:
        return read_top_logprobs(self.endpoint, data)

    def _steps(self, top: Sequence[tuple[str, float]]) -> bool:
        if self.number_mode == "first-token" or self._continues is False:
            return False
        return self.number_mode == "digits" or not any(len(_number_text(t)) > 1 for t, _ in top)

    def _step(self, prompts: Sequence[str], tops: Sequence[Sequence[tuple[str, float]]],
              steps: Sequence[bool]) -> dict[int, NumberRead] | None:
        """Digit-by-digit reads for the prompts where ``steps``; None if the server refused
        the continuation parameters. One level of prefixes at a time, all prompts together."""
        frontier: list[dict[str, float]] = [{} for _ in prompts]  # prefix text -> probability
        for i, top in enumerate(tops):
            for token, logprob in top if steps[i] else ():
                if token.strip() in _CANONICAL:
                    frontier[i][token] = frontier[i].get(token, 0.0) + math.exp(logprob)
        probs: list[dict[int, float]] = [{} for _ in prompts]
        requests, left = [1] * len(prompts), [0.0] * len(prompts)
        while any(frontier):
            jobs = [(i, text, p) for i, level in enumerate(frontier) for text, p in level.items()]
            for i, _, p in jobs:
                left[i] += p if p < self.min_prefix_prob else 0.0
            jobs = [job for job in jobs if job[2] >= self.min_prefix_prob]
            answers = self._continue_all([(prompts[i], text) for i, text, _ in jobs])
            if answers is None:
                return None
            frontier = [{} for _ in prompts]
            for (i, text, p), top in zip(jobs, answers, strict=True):
                requests[i] += 1
                further = 0.0
                for token, logprob in top:
                    q = math.exp(logprob)
                    # As LocalJudge's mask: " 7" after "5" is not a clean end of 5 either.
                    further += q if token.lstrip()[:1].isdigit() and token[:1] != "\n" else 0.0
                    # Paths to the same text ("57" as one token, or "5" then "7") add up and
                    # share one request: the server re-tokenizes the text it is given.
                    if _DIGITS.fullmatch(token) and (text + token).strip() in _CANONICAL:
                        frontier[i][text + token] = frontier[i].get(text + token, 0.0) + p * q
                self._expanded += 1
                self._max_further = max(self._max_further, further)
                n = int(text.strip())
                probs[i][n] = probs[i].get(n, 0.0) + p * max(0.0, 1.0 - further)
        return {i: NumberRead(probs[i], requests[i], True, left[i])
                for i in range(len(prompts)) if steps[i]}

    def _continue_all(self, jobs: Sequence[tuple[str, str]],
                      ) -> list[list[tuple[str, float]]] | None:
        """The next token's top list after each ``(prompt, partial answer)``; None when the
        server refuses the parameters (checked once, on the first such request, sent alone)."""
        payloads = [self._payload(prompt, prefix) for prompt, prefix in jobs]
        if self._continues is not None or not payloads:
            return self.endpoint.complete_all(payloads, self._top)
        try:
            first = self.endpoint.complete_all(payloads[:1], self._top)
        except JudgeHTTPError as err:
            if err.status not in _REFUSED:
                raise
            self._continues = False
            logger.warning("the judge endpoint refused to continue a partial answer (%s); "
                           "numbers are read from the first token only", err)
            return None
        self._continues = True
        return first + self.endpoint.complete_all(payloads[1:], self._top)

    def _first_token(self, top: Sequence[tuple[str, float]]) -> NumberRead:
        probs: dict[int, float] = {}
        for token, logprob in top:
            text = _number_text(token)
            if text:
                probs[int(text)] = probs.get(int(text), 0.0) + math.exp(logprob)
                if len(text) > 1:
                    self._seen_multi_digit = True
                else:
                    self._seen_digit = True
        return NumberRead(probs)


def _number_text(token: str) -> str:
    """The token's text if it reads as an integer 0..100 (as the first token is read: "007"
    counts as 7), else ""."""
    text = token.strip()
    # ASCII digits only: str.isdigit() accepts "²", which int() rejects.
    return text if _NUMBER.fullmatch(text) and int(text) <= 100 else ""
