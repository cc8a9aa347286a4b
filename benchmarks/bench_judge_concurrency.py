"""Judge throughput at ``max_concurrency`` 16 vs the serial client (issue 12: ratio >= 8).

A threaded OpenAI-compatible server on 127.0.0.1 answers every ``/chat/completions`` request
after a simulated latency (default 100 ms) with a top-logprobs reply; optionally it also
injects HTTP 500s on a share of first attempts (retried by the client). The same ``N`` judge
prompts go through :class:`mi_align.evaluation.judge.OpenAIJudge` once with
``max_concurrency=1`` and once with 16; the ratio is of prompts judged per second. Every answer
is checked (nothing lost, each prompt's number probabilities its own), and the server counts
requests per prompt (nothing judged twice beyond the injected retries).

Run: python benchmarks/bench_judge_concurrency.py [--n 256] [--latency-ms 100]
     [--concurrency 16] [--fail-share 0.0]
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mi_align.evaluation.endpoint import EndpointConfig
from mi_align.evaluation.judge import OpenAIJudge

TARGET = 8.0


class Server:
    """Replies ``{"choices": [...top_logprobs of the prompt's number...]}`` after ``latency``."""

    def __init__(self, latency_s: float, fail_share: float, seed: int = 0) -> None:
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        rng = random.Random(seed)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                with owner.lock:
                    first = owner.seen[prompt] == 0
                    owner.seen[prompt] += 1
                    fail = first and rng.random() < fail_share
                time.sleep(latency_s)
                if fail:
                    data, status = b'{"error": "injected"}', 500
                else:
                    number = int(prompt.rsplit(" ", 1)[-1]) % 101
                    top = [{"token": str(number), "logprob": -0.1},
                           {"token": str((number + 1) % 101), "logprob": -3.0}]
                    data = json.dumps({"choices": [{"logprobs": {"content": [
                        {"token": str(number), "logprob": -0.1, "top_logprobs": top}]}}]}).encode()
                    status = 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run(n: int, latency_s: float, concurrency: int, fail_share: float) -> dict[str, Any]:
    server = Server(latency_s, fail_share)
    try:
        cfg = EndpointConfig(timeout_s=10.0, max_retries=3, backoff_s=0.05, max_wait_s=1.0,
                             max_concurrency=concurrency)
        # first-token: the server answers one-digit numbers, and this measures concurrency,
        # not the digit-by-digit reading (which would add a request per digit)
        judge = OpenAIJudge(server.url, "bench", api_key_env="MI_BENCH_UNSET_KEY", config=cfg,
                            number_mode="first-token")
        prompts = [f"rate this answer {i}" for i in range(n)]
        t0 = time.perf_counter()
        probs = judge.number_probs(prompts)
        seconds = time.perf_counter() - t0
    finally:
        server.close()
    right = all(max(p, key=p.__getitem__) == i % 101 for i, p in enumerate(probs))
    extra = sum(server.seen.values()) - n
    return {"concurrency": concurrency, "seconds": round(seconds, 3),
            "prompts_per_s": round(n / seconds, 2), "answers_right": right and len(probs) == n,
            "requests_beyond_one_per_prompt": extra,
            "prompts_missing": sum(1 for i in range(n) if server.seen[prompts[i]] == 0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--fail-share", type=float, default=0.0,
                    help="share of prompts whose first attempt gets an HTTP 500 (retried)")
    args = ap.parse_args()
    latency = args.latency_ms / 1000
    serial = run(args.n, latency, 1, args.fail_share)
    parallel = run(args.n, latency, args.concurrency, args.fail_share)
    ratio = parallel["prompts_per_s"] / serial["prompts_per_s"]
    print(json.dumps({"n": args.n, "latency_ms": args.latency_ms, "fail_share": args.fail_share,
                      "serial": serial, "concurrent": parallel, "ratio": round(ratio, 2),
                      "target": f">= {TARGET}", "pass": ratio >= TARGET
                      and serial["answers_right"] and parallel["answers_right"]}, indent=1))


if __name__ == "__main__":
    main()
