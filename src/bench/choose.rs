//! The dev sweep's choice: the bars a setting must clear (retention, perplexity, irrelevant
//! contexts left unchanged), and the setting chosen among those that clear them.

use super::{Eval, Irrelevant};

/// The dev bars a setting must clear to be chosen.
#[derive(Clone, Copy, Debug)]
pub struct Bars {
    /// Share of the known facts still answered from memory.
    pub retention: f64,
    /// Perplexity of the neutral text relative to no intervention.
    pub perplexity_ratio: f64,
    /// Irrelevant contexts: the share left unchanged may fall at most this far below `none`'s.
    pub irrelevant_drop: f64,
    /// How many standard errors of the paired difference from `none` (over the same dev
    /// items) the drop must leave to spare. The most adherent setting that clears a bar tends
    /// to sit just above it on dev by chance, and below it on test; the guard keeps a setting
    /// whose drop is only within the bar by noise from being chosen.
    pub irrelevant_guard: f64,
}

/// The bars of the dev sweep: retention ≥ 95%, perplexity ≤ 1.05×, irrelevant contexts left
/// unchanged at least as often as `none` leaves them, less 2 points, with one standard error
/// of the paired difference to spare.
pub const BARS: Bars = Bars {
    retention: 0.95,
    perplexity_ratio: 1.05,
    irrelevant_drop: 0.02,
    irrelevant_guard: 1.0,
};

/// The robustness bar in words, as reports state it. `guarded`: chosen with
/// [`Bars::irrelevant_guard`] standard errors to spare (reports written before the guard was
/// kept lack the dev baseline it is paired against, and say the bar without it).
pub fn irrelevant_bar_words(guarded: bool) -> &'static str {
    match guarded {
        true => {
            "at least as often as none, less 2 points, with one standard error of the paired \
             difference (over the same dev items) to spare"
        }
        false => "at least as often as none, less 2 points",
    }
}

/// The paired difference of the share left unchanged, `e` minus `base`, over the same items,
/// and its standard error. Without per-item outcomes for both (or with different item counts)
/// it is the difference of the shares, with no error.
pub fn paired_unchanged(e: &Irrelevant, base: &Irrelevant) -> (f64, f64) {
    super::paired::paired_mean_se(&e.unchanged_items, &base.unchanged_items)
        .unwrap_or((e.unchanged.value - base.unchanged.value, 0.0))
}

impl Bars {
    /// The bars `e` misses, in words (empty: eligible). `irrelevant_base` is how `none` does on
    /// the same irrelevant items.
    pub fn missed(&self, e: &Eval, irrelevant_base: Option<&Irrelevant>) -> Vec<String> {
        let mut v = vec![];
        // Retention is measured on the dev facts the model knows closed-book; where it knows
        // none (NQ-Swap), there is nothing to lose and the bar does not apply.
        if e.retention.n > 0 && e.retention.value < self.retention {
            v.push(format!(
                "retention {:.1}% < {:.0}%",
                100.0 * e.retention.value,
                100.0 * self.retention
            ));
        }
        if e.perplexity_ratio > self.perplexity_ratio {
            v.push(format!(
                "perplexity ×{:.3} > ×{:.2}",
                e.perplexity_ratio, self.perplexity_ratio
            ));
        }
        if let (Some(base), Some(irr)) = (irrelevant_base, &e.irrelevant) {
            v.extend(self.irrelevant_missed(irr, base));
        }
        v
    }

    /// The irrelevant-context bar in words, if `irr` misses it against `base`.
    fn irrelevant_missed(&self, irr: &Irrelevant, base: &Irrelevant) -> Option<String> {
        let (diff, se) = paired_unchanged(irr, base);
        // The difference with the guard's margin taken off.
        let guarded = diff - self.irrelevant_guard * se;
        // A small tolerance keeps a setting that equals the bar from failing on rounding.
        if guarded + 1e-9 >= -self.irrelevant_drop {
            return None;
        }
        let (u, b, bar) = (
            100.0 * irr.unchanged.value,
            100.0 * base.unchanged.value,
            100.0 * self.irrelevant_drop,
        );
        Some(match se > 0.0 {
            false => {
                format!("irrelevant contexts unchanged {u:.1}% < none's {b:.1}% − {bar:.0} points")
            }
            true => format!(
                "irrelevant contexts unchanged {u:.1}%, {:+.1} points against none's {b:.1}%; \
                 less {} standard error ({:.1}) that is {:+.1}, under −{bar:.0} points",
                100.0 * diff,
                self.irrelevant_guard,
                100.0 * se,
                100.0 * guarded
            ),
        })
    }
}

/// What the dev sweep chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// The setting measured on test.
    pub index: usize,
    /// Whether it clears every bar.
    pub eligible: bool,
    /// When none is eligible: the setting with the highest adherence, and the bars it misses.
    pub best_ineligible: Option<(usize, Vec<String>)>,
}

/// The best dev setting: the highest adherence among those that clear every bar ([`BARS`]);
/// if none does, the one that costs least (the highest retention, then the most irrelevant
/// contexts left unchanged, then the lowest perplexity), flagged, with the best ineligible
/// setting (the highest adherence) and the bars it misses.
pub fn choose(evals: &[Eval], irrelevant_base: Option<&Irrelevant>) -> Chosen {
    let by_adherence = |a: &(usize, &Eval), b: &(usize, &Eval)| {
        a.1.adherence.value.total_cmp(&b.1.adherence.value)
    };
    let eligible = evals
        .iter()
        .enumerate()
        .filter(|(_, e)| BARS.missed(e, irrelevant_base).is_empty())
        .max_by(by_adherence);
    if let Some((i, _)) = eligible {
        return Chosen {
            index: i,
            eligible: true,
            best_ineligible: None,
        };
    }
    // The cheapest: the most retention, then the most irrelevant contexts left unchanged, then
    // the lowest perplexity.
    let unchanged = |e: &Eval| e.irrelevant.as_ref().map_or(0.0, |i| i.unchanged.value);
    let cheapest = evals
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            (a.retention.value.total_cmp(&b.retention.value))
                .then(unchanged(a).total_cmp(&unchanged(b)))
                .then(b.perplexity_ratio.total_cmp(&a.perplexity_ratio))
        })
        .map_or(0, |(i, _)| i);
    let best = evals.iter().enumerate().max_by(by_adherence);
    Chosen {
        index: cheapest,
        eligible: false,
        best_ineligible: best.map(|(i, e)| (i, BARS.missed(e, irrelevant_base))),
    }
}
