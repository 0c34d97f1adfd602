"""Quick start: generate, capture activations, fit a direction with numpy, steer with it, compare.

Run from the repository root after `pip install ./python`:

    python examples/python/quickstart.py

About a minute on two CPU cores with the default model (SmolLM2-135M-Instruct).
"""

import json
import tempfile
from pathlib import Path

import numpy as np

import ctxsteer

DATA = Path("counterfactual_data")
SITE = "blocks.18.hook_resid_post"

m = ctxsteer.Model("smollm2-135m")
print(m, "|", len(m.sites), "hook sites, e.g.", m.sites[5])
print("generate:", repr(m.generate("The capital of France is", max_tokens=8)))

# 1. Label 120 train conflicts: does the model follow the context or its memory?
lines = (DATA / "train.jsonl").read_text().splitlines()[:120]
train = Path(tempfile.mkdtemp()) / "train120.jsonl"
train.write_text("\n".join(lines) + "\n")
labels = ctxsteer.label(m, str(train))
items = {json.loads(l)["id"]: json.loads(l) for l in lines}
kept = [l for l in labels if l["label"] in ("follows_context", "follows_prior")]
print(f"labelled {len(labels)} train items; {len(kept)} follow the context or the prior")

# 2. Capture the residual stream at the last token of each prompt (context + query).
prompts = [f"{items[l['id']]['context']} {items[l['id']]['prompt']}" for l in kept]
_, cache = m.run_with_cache(prompts, sites=[SITE])
x = cache[SITE]  # (n, 576) float32
y = np.array([l["label"] == "follows_context" for l in kept])
print("captured", x.shape, "at", SITE)

# 3. The direction from "follows the prior" to "follows the context": the difference of the
#    class means, and how far apart the classes sit along it.
u = x[y].mean(0) - x[~y].mean(0)
u /= np.linalg.norm(u)
proj = x @ u
sigma = proj.std()
print(f"class means along u: context {proj[y].mean():.1f}, prior {proj[~y].mean():.1f} (std {sigma:.1f})")

# 4. Steer with it where the answer is produced (the prompt's last token and the generated
#    ones), at 1 and 2 spreads, and compare on dev conflicts: how often the answer follows the
#    context, and how often the closed-book answer is still the true fact.
dev = str(DATA / "dev.jsonl")
settings = [("none", None)]
for k in (1, 2):
    spec = ctxsteer.Spec()
    spec.add(SITE, u.astype(np.float32), scale=float(k * sigma), positions="answer")
    settings.append((f"{k} spread", spec))
for name, s in settings:
    out = ctxsteer.label(m, dev, spec=s)
    follows = np.mean([l["label"] == "follows_context" for l in out])
    known = np.mean([l["known"] for l in out])
    print(f"{name:8s} follows the context on {follows:.0%} of {len(out)} dev conflicts; "
          f"answers {known:.0%} closed-book with the true fact")
