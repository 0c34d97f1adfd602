//! Inference-time intervention (Li et al. 2023): probe each attention head's output on its own,
//! rank the heads by how well their probes separate "follows the context" from "follows the
//! prior", and shift the best K heads along their directions by alpha times their spread, at
//! every position.

use super::{steer_site, Mode, Steering};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::hooks::Positions;
use crate::probe::{Direction, ProbeFile, SiteProbe};

/// The per-head probes of `file`, best first: highest cross-validated AUROC on train, then
/// highest held-out AUROC, then by name so that the order is stable.
pub fn ranked_heads(file: &ProbeFile) -> Vec<&SiteProbe> {
    let mut heads: Vec<&SiteProbe> = file
        .sites
        .iter()
        .filter(|p| crate::probe::probe_site(&p.site, usize::MAX).is_ok_and(|(_, h)| h.is_some()))
        .collect();
    heads.sort_by(|a, b| {
        (b.metrics.cv_auroc.total_cmp(&a.metrics.cv_auroc))
            .then(b.metrics.auroc.total_cmp(&a.metrics.auroc))
            .then(a.site.cmp(&b.site))
    });
    heads
}

impl Steering {
    /// Shift the `k` best-ranked heads of a per-head probe file (`probe train --per-head`)
    /// along `direction` by `alpha` times each head's spread.
    pub fn from_head_probes(
        file: &ProbeFile,
        k: usize,
        direction: Direction,
        alpha: f32,
        positions: Positions,
        n_layers: usize,
    ) -> Result<Steering> {
        let ranked = ranked_heads(file);
        if ranked.is_empty() {
            return Err(Error::Invalid(
                "the probe file has no per-head probes (sites like blocks.L.attn.hook_z[H]); \
                 train them with `probe train --per-head` on an attn.hook_z capture"
                    .into(),
            ));
        }
        let sites = ranked
            .into_iter()
            .take(k)
            .map(|p| steer_site(p, direction, n_layers))
            .collect::<Result<Vec<_>>>()?;
        Ok(Steering {
            label: format!(
                "top {} heads, {} alpha={alpha}",
                sites.len(),
                direction.name()
            ),
            sites,
            mode: Mode::Add,
            alpha,
            positions,
            gate: None,
        })
    }
}
