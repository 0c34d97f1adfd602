#!/usr/bin/env python3
"""Put each context of a variants file inside a paragraph of ordinary sentences.

Every item whose context is not empty gets K lines of counterfactual_data/neutral.txt before its
context sentence and K after (chosen by a seeded hash of the item's subject, so the three
variants of one fact share their padding), so that a gate trained on the result sees
paragraph-long contexts where the conflicting sentence is one among many. Items without a
context (closed-book questions, neutral passages) are written as they are.

Usage: scripts/paragraph_variants.py VARIANTS.jsonl NEUTRAL.txt K > OUT.jsonl
"""
import hashlib
import json
import sys


def main():
    src, neutral, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lines = [l.strip() for l in open(neutral, encoding="utf-8") if l.strip()]
    for raw in open(src, encoding="utf-8"):
        item = json.loads(raw)
        if item.get("context"):
            h = int(hashlib.sha256(item["subject"].lower().encode()).hexdigest(), 16)
            picks = [lines[(h >> (6 * j)) % len(lines)] for j in range(2 * k)]
            item["context"] = " ".join(picks[:k] + [item["context"]] + picks[k:])
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
