"""Prefill and decode speed through the Python package, to set beside `ctxsteer bench-speed`
(the Rust API on the same model, weights and prompt length). A benchmark, not a test.

Usage: python scripts/python_speed.py [--model smollm2-135m] [--weights quantized] [--tokens 128]
Prints one JSON line: prefill and decode tokens per second, best of --repeats runs.
"""

import argparse
import json
import time

import ctxsteer

TEXT = (
    "The history of the city begins with a small settlement on the river, where "
    "traders met to exchange grain, salt and cloth. Over the centuries it grew into "
    "a capital with bridges, markets, libraries and a cathedral. "
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--weights", default="quantized")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    m = ctxsteer.Model(a.model, weights=a.weights)
    # The same text as bench-speed, cut to --tokens tokens and written back as text.
    ids = m.tokenize(TEXT * (1 + a.tokens // 30))[: a.tokens]
    prompt = m.decode(ids)
    n_prompt = len(m.tokenize(prompt))

    def timed(max_tokens):
        t0 = time.perf_counter()
        out = m.generate_ids(prompt, max_tokens=max_tokens)
        return time.perf_counter() - t0, len(out)

    best_prefill, best_decode = 0.0, 0.0
    for _ in range(a.repeats):
        t1, _ = timed(1)  # the prefill and the first token
        tn, n = timed(a.tokens + 1)  # then up to --tokens more (fewer if it ends)
        best_prefill = max(best_prefill, n_prompt / t1)
        if n > 1:
            best_decode = max(best_decode, (n - 1) / (tn - t1))
    print(
        json.dumps(
            {
                "model": a.model,
                "weights": a.weights,
                "prompt_tokens": n_prompt,
                "prefill_tok_s": round(best_prefill, 1),
                "decode_tok_s": round(best_decode, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
