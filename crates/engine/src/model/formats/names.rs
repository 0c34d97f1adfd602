//! Each family's weight-name table: llama.cpp's GGUF name and Hugging Face's safetensors name
//! of every weight of a block, without the `.weight` suffix.

use super::config::Family;
use super::weights::Names;

/// The names of one block's weights; `None` where the family has no such weight.
pub(in crate::model) struct BlockNames {
    pub attn_norm: Names,
    pub q: Names,
    pub k: Names,
    pub v: Names,
    pub q_norm: Option<Names>,
    pub k_norm: Option<Names>,
    pub o: Names,
    pub post_attn_norm: Option<Names>,
    pub mlp_norm: Names,
    pub gate: Names,
    pub up: Names,
    pub down: Names,
    pub post_mlp_norm: Option<Names>,
}

/// The embedding's and the final norm's names.
pub(in crate::model) fn embed() -> Names {
    ("token_embd".into(), "model.embed_tokens".into())
}

pub(in crate::model) fn final_norm() -> Names {
    ("output_norm".into(), "model.norm".into())
}

impl BlockNames {
    pub fn new(family: Family, l: usize) -> Self {
        let n = |g: &str, h: &str| (format!("blk.{l}.{g}"), format!("model.layers.{l}.{h}"));
        let gemma = family.is_gemma();
        let opt = |on: bool, g: &str, h: &str| on.then(|| n(g, h));
        BlockNames {
            attn_norm: n("attn_norm", "input_layernorm"),
            q: n("attn_q", "self_attn.q_proj"),
            k: n("attn_k", "self_attn.k_proj"),
            v: n("attn_v", "self_attn.v_proj"),
            q_norm: opt(gemma, "attn_q_norm", "self_attn.q_norm"),
            k_norm: opt(gemma, "attn_k_norm", "self_attn.k_norm"),
            o: n("attn_output", "self_attn.o_proj"),
            // Llama's `post_attention_layernorm` is the norm before the MLP; Gemma's follows
            // attention, and its MLP has norms of its own on both sides.
            post_attn_norm: opt(gemma, "post_attention_norm", "post_attention_layernorm"),
            mlp_norm: match gemma {
                true => n("ffn_norm", "pre_feedforward_layernorm"),
                false => n("ffn_norm", "post_attention_layernorm"),
            },
            gate: n("ffn_gate", "mlp.gate_proj"),
            up: n("ffn_up", "mlp.up_proj"),
            down: n("ffn_down", "mlp.down_proj"),
            post_mlp_norm: opt(gemma, "post_ffw_norm", "post_feedforward_layernorm"),
        }
    }
}
