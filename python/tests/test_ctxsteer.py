"""The Python package against the CLI: the same tokens and the same activations, bit for bit,
on the same inputs; errors as Python exceptions; arrays with the documented shapes.

Needs the default model (``ctxsteer fetch-model``) and the CLI built (``cargo build
--release``); CTXSTEER_BIN names another binary.
"""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ctxsteer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("CTXSTEER_BIN", ROOT / "target" / "release" / "ctxsteer"))
EDIT = ROOT / "probes" / "reft_l12.safetensors"
GATE = ROOT / "probes" / "conflict_irr.json"
PROBES = ROOT / "probes" / "follows_context.json"
CONFLICT = (
    "The Eiffel Tower is located in the city of Rome. "
    "The Eiffel Tower is located in the city of"
)


@pytest.fixture(scope="module")
def model():
    return ctxsteer.Model("smollm2-135m", weights="f32")


def cli(*args):
    """Run the CLI on the default model in f32 weights; its stdout."""
    out = subprocess.run(
        [str(BIN), *map(str, args), "--weights", "f32"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def cli_tokens(prompt, *args):
    return json.loads(cli("generate", "--prompt", prompt, "--json", *args))["token_ids"]


def read_safetensors(path):
    """Every tensor of a safetensors file as a numpy array (the format: an 8-byte header length,
    a JSON header, then the raw little-endian data)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    kinds = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "U32": "<u4"}
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        data = raw[8 + n + a : 8 + n + b]
        out[name] = np.frombuffer(data, dtype=kinds[t["dtype"]]).reshape(t["shape"])
    return out


def test_config_and_sites_describe_the_model(model):
    c = model.config
    assert (c["n_layers"], c["d_model"]) == (30, 576)
    assert "blocks.12.hook_resid_post" in model.sites
    assert len(model.sites) == 2 + 7 * 30
    assert len(model.identity["sha256"]) == 64


@pytest.mark.parametrize("chat", [False, True])
def test_generate_gives_the_cli_tokens(model, chat):
    prompt = "The capital of France is"
    want = cli_tokens(prompt, "--max-tokens", 10, *(["--chat"] if chat else []))
    got = model.generate_ids(prompt, max_tokens=10, chat=chat)
    assert got == want
    assert model.generate(prompt, max_tokens=10, chat=chat) == model.decode(want)


def test_steered_and_gated_generation_gives_the_cli_tokens(model):
    plain = model.generate_ids(CONFLICT, max_tokens=4)
    edited = model.generate_ids(CONFLICT, max_tokens=4, steer=str(EDIT))
    assert edited == cli_tokens(CONFLICT, "--max-tokens", 4, "--steer", EDIT)
    assert edited != plain, "the edit changes the answer to this conflict"
    gated = model.generate_ids(CONFLICT, max_tokens=4, steer=str(EDIT), gate=str(GATE))
    want = cli_tokens(CONFLICT, "--max-tokens", 4, "--steer", EDIT, "--gate", GATE)
    assert gated == want
    # Scale 0 turns the edit off.
    assert model.generate_ids(CONFLICT, max_tokens=4, steer=str(EDIT), alpha=0.0) == plain


def test_a_spec_built_in_python_runs_as_the_cli_runs_its_file(model, tmp_path):
    probe = ctxsteer.Probe.load(PROBES)
    u = probe.direction(kind="meandiff")
    assert u.dtype == np.float32 and abs(float(np.linalg.norm(u)) - 1.0) < 1e-4
    spec = ctxsteer.Spec()
    spec.add(probe.best, u, scale=-40.0)
    assert len(spec) == 1
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    got = model.generate_ids(CONFLICT, max_tokens=4, spec=spec)
    assert got == cli_tokens(CONFLICT, "--max-tokens", 4, "--spec", path)
    assert got == model.generate_ids(CONFLICT, max_tokens=4, spec=ctxsteer.Spec.load(path))


def test_activations_equal_the_cli_capture_bit_for_bit(model, tmp_path):
    item = {
        "id": "t0",
        "relation": "landmark",
        "subject": "the Eiffel Tower",
        "prompt": "The Eiffel Tower is located in the city of",
        "question": "In which city is the Eiffel Tower?",
        "context": "The Eiffel Tower is located in the city of Rome.",
        "prior_answer": "Paris",
        "context_answer": "Rome",
    }
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(item) + "\n")
    sites = ["blocks.3.hook_resid_post", "blocks.12.attn.hook_z"]
    out = tmp_path / "acts"
    cli("capture", "--data", data, "--sites", ",".join(sites), "--positions", "last",
        "--batch-size", "1", "--out", out)
    index = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    shards = {}
    for f in sorted(out.glob("*.safetensors")):
        shards.update(read_safetensors(f))
    text = f"{item['context']} {item['prompt']}"
    assert len(model.tokenize(text)) == index[0]["n_tokens"]
    logits, cache = model.run_with_cache([text], sites=sites)
    assert logits.shape == (1, model.config["vocab_size"])
    for site in sites:
        want = next(v for k, v in shards.items() if k.startswith(site))
        assert cache[site].shape == (1, want.shape[-1])
        assert np.array_equal(cache[site][0], want.reshape(-1, want.shape[-1])[0]), site


def test_all_positions_pad_with_nan_and_agree_with_last(model):
    prompts = ["The Eiffel Tower is in", "Hello"]
    site = "blocks.5.hook_resid_post"
    _, last = model.run_with_cache(prompts, sites=[site])
    _, every = model.run_with_cache(prompts, sites=site, positions="all")
    a = every[site]
    n0, n1 = (len(model.tokenize(p)) for p in prompts)
    assert a.shape == (2, max(n0, n1), 576)
    assert np.isnan(a[1, n1:]).all() and not np.isnan(a[1, :n1]).any()
    assert np.array_equal(a[0, n0 - 1], last[site][0])
    assert np.array_equal(a[1, n1 - 1], last[site][1])


def test_probe_scores_match_the_probe_file(model):
    probe = ctxsteer.Probe.load(PROBES)
    assert probe.target == "follows_context" and probe.best in probe.sites
    _, cache = model.run_with_cache([CONFLICT, "The capital of France is"], sites=[probe.best])
    s = probe.score(cache[probe.best])
    assert s.shape == (2,) and np.isfinite(s).all()
    # The logit by hand: weights on standardized features, plus the bias.
    p = json.loads(PROBES.read_text())
    site = next(x for x in p["sites"] if x["site"] == probe.best)
    x = cache[probe.best][1].astype(np.float64)
    z = ((x - site["mean"]) / np.array(site["std"]) * site["weights"]).sum() + site["bias"]
    assert abs(z - s[1]) < 1e-3 * max(1.0, abs(z))
    assert probe.score(cache[probe.best][0])[0] == s[0]
    assert 0.5 <= probe.metrics()["auroc"] <= 1.0


def test_label_gives_the_cli_labels(model, tmp_path):
    data = ROOT / "counterfactual_data" / "counterfactual.jsonl"
    rows = [l for l in data.read_text().splitlines() if '"split":"test"' in l][:6]
    small = tmp_path / "six.jsonl"
    small.write_text("\n".join(rows) + "\n")
    out = tmp_path / "labels.jsonl"
    cli("label", "--data", small, "--out", out)
    want = [json.loads(l) for l in out.read_text().splitlines()]
    got = ctxsteer.label(model, str(small))
    assert [(g["id"], g["label"], g["known"]) for g in got] == [
        (w["id"], w["label"], w["known"]) for w in want
    ]
    assert got == want


def test_bench_conflict_gives_the_cli_report(model, tmp_path):
    data = ROOT / "counterfactual_data" / "counterfactual.jsonl"
    args = ["--limit", "12", "--seed", "1", "--methods", "none,cad"]
    cli("bench", "conflict", "--data", data, *args, "--out", tmp_path / "cli")
    want = json.loads((tmp_path / "cli" / "report.json").read_text())
    got = ctxsteer.bench_conflict(
        model, data, tmp_path / "py", methods=["none", "cad"], limit=12, seed=1
    )
    assert (tmp_path / "py" / "report.html").exists()
    assert [m["method"] for m in got["methods"]] == ["none", "cad"]
    for g, w in zip(got["methods"], want["methods"]):
        assert g["chosen"] == w["chosen"]
        assert g["test"]["adherent"] == w["test"]["adherent"]
        assert g["test"]["irrelevant"] == w["test"]["irrelevant"]
        assert g["gold"] == w["gold"]
    with pytest.raises(ValueError, match="valid choices"):
        ctxsteer.bench_conflict(model, data, tmp_path / "bad", methods=["nope"])
    with pytest.raises(ValueError, match="--resume"):
        ctxsteer.bench_conflict(model, data, tmp_path / "py", methods=["none"], limit=12)
    with pytest.raises(ValueError, match="within dev"):
        ctxsteer.bench_conflict(model, data, tmp_path / "tr", methods=["none"], split="train")


def test_errors_are_python_exceptions_with_the_library_messages(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ctxsteer.Probe.load(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="out of range"):
        model.run_with_cache(["x"], sites=["blocks.99.hook_resid_post"])
    with pytest.raises(ValueError, match="valid choices"):
        ctxsteer.Model("smollm2-135m", weights="f16")
    with pytest.raises(FileNotFoundError, match="not a known model name"):
        ctxsteer.Model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="needs the site"):
        vec = tmp_path / "v.json"
        vec.write_text(json.dumps([0.0] * 576))
        model.generate("x", max_tokens=1, steer=str(vec))
    with pytest.raises(ValueError, match="expects 576"):
        ctxsteer.Probe.load(PROBES).score(np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="not a spec"):
        ctxsteer.Spec.from_json("{")


@pytest.mark.parametrize("call", ["label", "bench_conflict"])
def test_an_interrupted_long_call_raises_keyboard_interrupt(model, tmp_path, call):
    import signal
    import threading
    import time

    data = ROOT / "counterfactual_data" / "counterfactual.jsonl"
    run = {
        # All their items: minutes.
        "label": lambda: ctxsteer.label(model, str(data)),
        "bench_conflict": lambda: ctxsteer.bench_conflict(
            model, data, tmp_path / "b", methods=["none"]
        ),
    }[call]
    # Ctrl-C one second in, and again each second until the call has stopped.
    stopped = threading.Event()

    def press():
        while not stopped.wait(1.0):
            os.kill(os.getpid(), signal.SIGINT)

    t0 = time.monotonic()
    threading.Thread(target=press, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        stopped.set()
    # It stopped after the batch under way, long before the end.
    assert time.monotonic() - t0 < 30
