"""The committed learned edit on conflicts and on irrelevant contexts, with and without its gate.

Run from the repository root after `pip install ./python`:

    python examples/python/edit_on_conflict.py

The edit (`probes/reft_l12.safetensors`, LoReFT rank 4 at layer 12) makes the model follow a
context that contradicts its memory. Alone it also copies the object of a sentence about
another subject; behind the conflict gate (`probes/conflict_irr.json`, a probe trained with such
contexts as negatives) it acts only where the context answers the question; the gate's margin
widens it past its probe's boundary (`bench conflict` chooses the margin on dev). Under a minute.
"""

import ctxsteer

m = ctxsteer.Model("smollm2-135m")
EDIT = "probes/reft_l12.safetensors"
GATE = "probes/conflict_irr.json"

edit = ctxsteer.Edit.load(EDIT, m)
print(f"edit: rank {edit.rank} at {', '.join(edit.sites)}")

prompts = {
    "conflict": "The Eiffel Tower is located in the city of Rome. "
    "The Eiffel Tower is located in the city of",
    "true context": "The Eiffel Tower is located in the city of Paris. "
    "The Eiffel Tower is located in the city of",
    "irrelevant": "The Sydney Opera House is located in the city of Sydney. "
    "The Eiffel Tower is located in the city of",
    "closed-book": "The Eiffel Tower is located in the city of",
}
runs = {
    "none": {},
    "edit": {"steer": EDIT},
    "edit, half strength": {"steer": EDIT, "alpha": 0.5},
    "edit + gate": {"steer": EDIT, "gate": GATE},
    "edit + gate, margin 4": {"steer": EDIT, "gate": GATE, "gate_margin": 4.0},
}
width = max(map(len, prompts))
print(f"{'':{width}s} | " + " | ".join(f"{r:21s}" for r in runs))
for kind, prompt in prompts.items():
    answers = [m.generate(prompt, max_tokens=3, **kw).strip().split("\n")[0] for kw in runs.values()]
    print(f"{kind:{width}s} | " + " | ".join(f"{a[:21]:21s}" for a in answers))

# The same edit as a spec: what `ctxsteer generate --print-spec` would write.
spec = edit.spec(scale=1.0)
print(f"\nthe edit as a spec: {len(spec)} intervention(s), {len(spec.to_json())} bytes of JSON")
