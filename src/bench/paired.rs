//! Paired differences between methods on the same test items: each method's per-item outcome
//! (its greedy answer names the context answer, or not) minus another's, with a bootstrap
//! interval over items. Two methods' own intervals can overlap while the paired one does not.

use super::{metrics::mean_rate, Method, MethodResult, Rate};

/// The methods every other one is compared with, when they were run.
const BASELINES: [Method; 2] = [Method::None, Method::Cad];

/// The mean of `a - b` over items paired by position, with a bootstrap 95% interval; None when
/// the two do not cover the same items.
pub fn paired_difference(a: &[bool], b: &[bool]) -> Option<Rate> {
    Some(mean_rate(&differences(a, b)?, 11))
}

/// `a - b` per item, paired by position; None when the two do not cover the same items.
fn differences(a: &[bool], b: &[bool]) -> Option<Vec<f64>> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .map(|(x, y)| *x as u8 as f64 - *y as u8 as f64)
            .collect(),
    )
}

/// The mean of `a - b` over items paired by position and its standard error (sample standard
/// deviation of the differences over √n; 0 for a single item); None when the two do not cover
/// the same items.
pub fn paired_mean_se(a: &[bool], b: &[bool]) -> Option<(f64, f64)> {
    let d = differences(a, b)?;
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    if d.len() < 2 {
        return Some((mean, 0.0));
    }
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, (var / n).sqrt()))
}

/// Fill each method's `paired` with its test adherence minus that of `none` and of `cad`
/// (those of them that were run), on the same items; and, where irrelevant contexts were
/// measured, its share of them left unchanged minus `none`'s (`irrelevant vs none`).
pub fn fill(results: &mut [MethodResult]) {
    let unchanged = |r: &MethodResult| {
        r.test
            .irrelevant
            .as_ref()
            .map(|i| i.unchanged_items.clone())
    };
    let none_irr = results
        .iter()
        .find(|r| r.method == Method::None)
        .and_then(unchanged);
    let bases: Vec<(Method, Vec<bool>)> = BASELINES
        .iter()
        .filter_map(|b| {
            results
                .iter()
                .find(|r| r.method == *b)
                .map(|r| (*b, r.test.adherent.clone()))
        })
        .collect();
    for r in results.iter_mut() {
        for (b, base) in &bases {
            if r.method == *b {
                continue;
            }
            if let Some(d) = paired_difference(&r.test.adherent, base) {
                r.paired.insert(format!("vs {}", b.name()), d);
            }
        }
        if r.method == Method::None {
            continue;
        }
        let d = none_irr.as_ref().zip(unchanged(r));
        if let Some(d) = d.and_then(|(base, own)| paired_difference(&own, base)) {
            r.paired.insert("irrelevant vs none".into(), d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_difference_counts_items_that_change() {
        let a = [true, true, false, true];
        let b = [false, true, false, false];
        let d = paired_difference(&a, &b).unwrap();
        assert_eq!((d.value, d.n), (0.5, 4));
        assert!(d.ci_low <= 0.5 && d.ci_high >= 0.5);
        assert_eq!(paired_difference(&a, &a).unwrap().ci_high, 0.0);
        assert!(paired_difference(&a, &b[..3]).is_none());
    }
}
