//! What one forward call takes and keeps: a left-padded batch of token rows, the per-layer
//! key/value cache that decoding continues, and the causal and padding mask.

use crate::error::Result;
use candle_core::{Device, Tensor};

/// The per-layer key/value cache for incremental decoding (batch rows share one layout).
///
/// Each layer's keys and values live in buffers `[b, kv_heads, capacity, d_head]` with room
/// after the positions seen so far; a forward call writes its positions in place and reads a
/// view of the first `len`. Before, every call concatenated the whole cache with its new
/// positions: a decode step of 16 rows after 300-token prompts copied 150 MB.
pub struct KvCache {
    pub(in crate::model) kv: Vec<Option<(Tensor, Tensor)>>,
    /// Positions already in the cache.
    pub len: usize,
    /// Left padding of each batch row, fixed at prefill.
    pub(in crate::model) pads: Vec<usize>,
    /// Positions the buffers get beyond the prompt when they are made.
    room: usize,
}

/// Room after the prompt when the caller does not say how much it will decode.
const DEFAULT_ROOM: usize = 32;

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            kv: vec![None; n_layers],
            len: 0,
            pads: vec![],
            room: DEFAULT_ROOM,
        }
    }

    /// The same, with buffers made for `positions` more after the prompt (what the caller
    /// will decode or score), so that they never grow: growing copies them into buffers half
    /// as large again, and both are held while it does.
    pub fn with_room(n_layers: usize, positions: usize) -> Self {
        KvCache {
            room: positions,
            ..KvCache::new(n_layers)
        }
    }

    /// Forget every position from `len` on, so that the cache continues from there. Scoring
    /// several continuations of one prompt runs each on the cache and truncates it back, where
    /// it copied the cache for each before.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Layer `l`'s buffers with the number of positions they hold.
    pub(in crate::model) fn slot(&mut self, l: usize) -> KvSlot<'_> {
        KvSlot {
            past: self.len,
            room: self.room,
            kv: &mut self.kv[l],
        }
    }

    /// A single-row cache repeated into `n` identical rows (to branch one prefix many ways).
    pub fn repeat_rows(&self, n: usize) -> Result<KvCache> {
        let kv = self
            .kv
            .iter()
            .map(|slot| match slot {
                Some((k, v)) => Ok(Some((k.repeat((n, 1, 1, 1))?, v.repeat((n, 1, 1, 1))?))),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            kv,
            len: self.len,
            pads: vec![self.pads.first().copied().unwrap_or(0); n],
            room: self.room,
        })
    }
}

/// One layer's key and value buffers in a [`KvCache`], holding `past` positions.
pub(in crate::model) struct KvSlot<'a> {
    kv: &'a mut Option<(Tensor, Tensor)>,
    past: usize,
    room: usize,
}

impl KvSlot<'_> {
    /// Writes this call's keys and values `[b, kv_heads, seq, d_head]` after the positions
    /// held, growing the buffers when full, and returns views of all `past + seq` positions.
    /// Tensors that carry a gradient are concatenated instead: an in-place write would cut
    /// the graph.
    pub(in crate::model) fn append(self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (past, seq) = (self.past, k.dim(2)?);
        if k.track_op() || v.track_op() {
            let (k, v) = match self.kv.take() {
                Some((pk, pv)) => (
                    Tensor::cat(&[&pk.narrow(2, 0, past)?, &k], 2)?,
                    Tensor::cat(&[&pv.narrow(2, 0, past)?, &v], 2)?,
                ),
                None => (k, v),
            };
            *self.kv = Some((k.clone(), v.clone()));
            return Ok((k, v));
        }
        let need = past + seq;
        let room = match &*self.kv {
            Some((bk, _)) => bk.dim(2)? >= need,
            None => false,
        };
        if !room {
            // The room asked for after a prompt, and half again when decoding goes on.
            let old = self.kv.take();
            let cap = need
                + if old.is_some() {
                    (need / 2).max(DEFAULT_ROOM)
                } else {
                    self.room
                };
            *self.kv = Some((
                grown(old.as_ref().map(|o| &o.0), &k, past, cap)?,
                grown(old.as_ref().map(|o| &o.1), &v, past, cap)?,
            ));
        }
        let Some((bk, bv)) = &*self.kv else {
            unreachable!("the buffers were just made")
        };
        bk.slice_set(&k.contiguous()?, 2, past)?;
        bv.slice_set(&v.contiguous()?, 2, past)?;
        Ok((bk.narrow(2, 0, need)?, bv.narrow(2, 0, need)?))
    }
}

/// A buffer shaped like `like` with `cap` positions, holding the first `past` of `old`.
fn grown(old: Option<&Tensor>, like: &Tensor, past: usize, cap: usize) -> Result<Tensor> {
    let (b, h, _, d) = like.dims4()?;
    let buf = Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?;
    if let Some(old) = old.filter(|_| past > 0) {
        buf.slice_set(&old.narrow(2, 0, past)?.contiguous()?, 2, 0)?;
    }
    Ok(buf)
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsAt {
    Last,
    All,
    /// No logits: the final-normalized residual at every position, `[b, seq, d_model]` (the
    /// unembedding's input), for callers that unembed only the positions they need.
    Normed,
}

/// A batch of token rows, left-padded to one length; `pads[r]` columns of row r are padding.
pub struct Batch {
    pub ids: Vec<Vec<u32>>,
    pub pads: Vec<usize>,
}

impl Batch {
    pub fn single(ids: &[u32]) -> Self {
        Batch {
            ids: vec![ids.to_vec()],
            pads: vec![0],
        }
    }

    /// Left-pad rows of different lengths with `pad_id`.
    pub fn left_padded(rows: &[Vec<u32>], pad_id: u32) -> Self {
        let n = rows.iter().map(Vec::len).max().unwrap_or(0);
        let pads: Vec<usize> = rows.iter().map(|r| n - r.len()).collect();
        let ids = rows
            .iter()
            .zip(&pads)
            .map(|(r, p)| {
                std::iter::repeat_n(pad_id, *p)
                    .chain(r.iter().copied())
                    .collect()
            })
            .collect();
        Batch { ids, pads }
    }
}

/// Additive mask `[b, 1, seq, kv]`: -inf on future columns, on padding and, with a `window`,
/// on keys `window` or more positions behind the query (transformers' sliding window counts
/// cache columns, padding included). None when nothing needs masking.
pub(in crate::model) fn attention_mask(
    pads: &[usize],
    offset: usize,
    seq: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let b = pads.len();
    let no_pad = pads.iter().all(|p| *p == 0);
    let kv = offset + seq;
    if seq == 1 && no_pad && window.is_none_or(|w| kv <= w) {
        return Ok(None);
    }
    let mut m = vec![0f32; b * seq * kv];
    for r in 0..b {
        for i in 0..seq {
            let q = offset + i;
            for j in 0..kv {
                let outside = window.is_some_and(|w| q >= j + w);
                if j > q || j < pads[r] || outside {
                    m[(r * seq + i) * kv + j] = f32::NEG_INFINITY;
                }
            }
            // A padding query row sees nothing; let it see itself so softmax stays finite.
            if q < pads[r] {
                m[(r * seq + i) * kv + q] = 0.0;
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, (b, 1, seq, kv), device)?))
}
