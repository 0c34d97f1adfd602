#!/usr/bin/env python3
"""Write NQ-Swap questions as ctxsteer items in four variants, to measure where a gate fires.

For a seeded sample of N NQ-Swap rows (one per question), write:
  counterfactual  the substituted paragraph (sub_context), as `data import --format nqswap` does;
  true_context    the original paragraph (org_context), whose answer is the true one;
  no_context      the question alone (closed-book);
and, from counterfactual_data/neutral.txt, passages of five lines each (variant neutral).

Usage: scripts/nqswap_variants.py NQSWAP.jsonl NEUTRAL.txt N SEED > OUT.jsonl
"""
import json
import random
import re
import sys


def paragraph(text):
    text = re.sub(r"</?[A-Za-z]+>", " ", text)
    return " ".join(text.split())


def main():
    src, neutral, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rows, seen = [], set()
    for line in open(src, encoding="utf-8"):
        r = json.loads(line)
        if r["question"] not in seen:
            seen.add(r["question"])
            rows.append(r)
    random.Random(seed).shuffle(rows)
    out = sys.stdout
    for i, r in enumerate(rows[:n]):
        q = r["question"]
        base = {
            "relation": "nq",
            "subject": q,
            "question": q + "?",
            "prompt": f"question: {q}\nanswer:",
            "prior_answer": r["org_answer"][0],
            "context_answer": r["sub_answer"][0],
        }
        for variant, ctx in [
            ("counterfactual", r["sub_context"]),
            ("true_context", r["org_context"]),
            ("no_context", None),
        ]:
            item = dict(base, id=f"nq{i}:{variant}", variant=variant)
            item["context"] = f"context: {paragraph(ctx)}\n" if ctx else ""
            out.write(json.dumps(item) + "\n")
    lines = [l.strip() for l in open(neutral, encoding="utf-8") if l.strip()]
    for k in range(0, len(lines) - 4, 5):
        text = " ".join(lines[k : k + 5])
        out.write(json.dumps({
            "id": f"neutral:{k}", "relation": "neutral", "subject": text[:30],
            "question": text, "prompt": text, "context": "",
            "prior_answer": "(no answer)", "context_answer": "(no answer)",
            "variant": "neutral",
        }) + "\n")


if __name__ == "__main__":
    main()
