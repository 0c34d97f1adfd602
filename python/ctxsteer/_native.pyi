"""Type stubs of ctxsteer's extension module (the Rust engine)."""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike]
_Strs = Union[str, Sequence[str]]
_Floats = Union[float, Sequence[float]]

class Model:
    """A language model loaded by ctxsteer's engine."""

    def __init__(
        self, model: str = "smollm2-135m", weights: str = "f32", device: str = "cpu"
    ) -> None: ...
    @property
    def config(self) -> Dict[str, Any]:
        """Architecture: family, n_layers, d_model, n_heads, n_kv_heads, d_mlp, vocab_size, …"""
    @property
    def sites(self) -> List[str]:
        """Every hook site, in TransformerLens names (e.g. ``blocks.12.hook_resid_post``)."""
    @property
    def identity(self) -> Dict[str, Any]:
        """The model file and its sha256, which probe files and edits are checked against."""
    def tokenize(self, text: str, chat: bool = False) -> List[int]:
        """Token ids of a prompt as the model runs it (with BOS where the model wants one)."""
    def decode(self, ids: Sequence[int]) -> str: ...
    def generate_ids(
        self,
        prompt: str,
        max_tokens: int = 48,
        chat: bool = False,
        spec: Optional["Spec"] = None,
        steer: Optional[_Strs] = None,
        alpha: Optional[_Floats] = None,
        positions: str = "all",
        gate: Optional[str] = None,
        gate_margin: float = 0.0,
        temperature: float = 0.0,
        top_p: float = 0.9,
        seed: int = 0,
    ) -> List[int]:
        """The new tokens' ids; arguments as in ``Model.generate``."""
    def run_with_cache(
        self,
        prompts: _Strs,
        sites: _Strs,
        positions: str = "last",
        spec: Optional["Spec"] = None,
        chat: bool = False,
    ) -> Tuple[npt.NDArray[np.float32], Dict[str, npt.NDArray[np.float32]]]:
        """Last-position logits (batch, vocab) and activations at ``sites``.

        positions="last": each site's array is (batch, width) at each prompt's last token;
        "all": (batch, longest prompt, width), NaN past a shorter prompt's end. The prompts run
        in one left-padded batch; ``spec`` applies interventions during the run.
        """

class Spec:
    """Interventions as data: where (a hook site), at which positions, and what."""

    def __init__(self) -> None: ...
    @staticmethod
    def load(path: _Path) -> "Spec":
        """A spec file, as ``ctxsteer generate --print-spec`` writes it."""
    @staticmethod
    def from_json(text: str) -> "Spec": ...
    def to_json(self) -> str: ...
    def add(
        self,
        site: str,
        vector: npt.ArrayLike,
        scale: float = 1.0,
        positions: str = "all",
    ) -> None:
        """Add ``scale * vector`` at ``site`` on ``positions`` (all, prompt, generated, last,
        answer or indices like "0,3"). ``vector`` is float32."""
    def __len__(self) -> int: ...

class Probe:
    """A probe file from ``ctxsteer probe train``: one linear probe per site."""

    @staticmethod
    def load(path: _Path) -> "Probe": ...
    @property
    def best(self) -> str:
        """The site with the best cross-validated AUROC on train."""
    @property
    def sites(self) -> List[str]: ...
    @property
    def target(self) -> str:
        """What the probes predict: follows_context, conflict or known."""
    def score(
        self, acts: npt.NDArray[np.float32], site: Optional[str] = None
    ) -> npt.NDArray[np.float32]:
        """Scores of (width,) or (n, width) float32 activations at ``site`` (default: best):
        a logistic probe's logit (positive predicts the positive class, e.g. "follows the
        context"), a linear probe's ±1-scale score."""
    def direction(
        self, site: Optional[str] = None, kind: str = "probe"
    ) -> npt.NDArray[np.float32]:
        """A unit direction at ``site``: kind "probe", "meandiff" or "pca" (positive means
        "context")."""
    def metrics(self, site: Optional[str] = None) -> Dict[str, float]:
        """Held-out metrics at ``site``: accuracy, auroc, control_auroc, cv_auroc, …"""

class Edit:
    """A learned low-rank edit from ``ctxsteer reft train``."""

    @staticmethod
    def load(path: _Path, model: Model) -> "Edit":
        """Read an edit, checking it was trained for ``model``."""
    @property
    def sites(self) -> List[str]: ...
    @property
    def rank(self) -> int: ...
    def spec(self, scale: float = 1.0, positions: str = "all") -> Spec:
        """The spec that applies the edit, its change scaled by ``scale`` (0 is off)."""

def label(
    model: Model,
    data: _Path,
    form: str = "completion",
    split: Optional[str] = None,
    spec: Optional[Spec] = None,
    steer: Optional[_Strs] = None,
    alpha: Optional[_Floats] = None,
    gate: Optional[str] = None,
    gate_margin: float = 0.0,
) -> List[Dict[str, Any]]: ...

def bench_conflict(
    model: Model,
    data: _Path,
    out: _Path,
    methods: Optional[List[str]] = None,
    form: str = "completion",
    artefacts: _Path = "probes",
    steer: List[_Path] = [],
    gate: List[_Path] = [],
    heads_from: Optional[_Path] = None,
    limit: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 16,
    resume: bool = False,
    split: str = "test",
) -> Dict[str, Any]: ...
