//! Number parsers for clap: every number option is checked where it is parsed, so NaN,
//! infinities and out-of-range values are refused with the valid range instead of silently
//! changing behaviour.

fn number<T: std::str::FromStr + Into<f64> + Copy>(s: &str) -> std::result::Result<T, String> {
    let v: T = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !v.into().is_finite() {
        return Err(format!("`{s}` is not a finite number"));
    }
    Ok(v)
}

/// Any finite number.
pub fn finite_f32(s: &str) -> std::result::Result<f32, String> {
    number(s)
}

/// A finite number >= 0.
pub fn non_negative_f32(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = number(s)?;
    (v >= 0.0)
        .then_some(v)
        .ok_or_else(|| format!("`{s}` must be >= 0"))
}

/// A finite number > 0.
pub fn positive_f32(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = number(s)?;
    (v > 0.0)
        .then_some(v)
        .ok_or_else(|| format!("`{s}` must be > 0"))
}

/// A number in (0, 1].
pub fn probability(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = number(s)?;
    (v > 0.0 && v <= 1.0)
        .then_some(v)
        .ok_or_else(|| format!("`{s}` must be in (0, 1]"))
}

pub fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = number(s)?;
    (v > 0.0)
        .then_some(v)
        .ok_or_else(|| format!("`{s}` must be > 0"))
}

pub fn non_negative_f64(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = number(s)?;
    (v >= 0.0)
        .then_some(v)
        .ok_or_else(|| format!("`{s}` must be >= 0"))
}

/// A count of at least 1.
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    (v >= 1)
        .then_some(v)
        .ok_or_else(|| format!("`{s}` must be at least 1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random strings from number-like characters: every parser answers with a value inside
    /// its range or an error, and never panics.
    #[test]
    fn number_parsers_hold_their_ranges_on_random_input() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pool: Vec<char> = "0123456789.-+eEinfatyNI x_".chars().collect();
        for _ in 0..5000 {
            let n = rng.random_range(0..12);
            let s: String = (0..n)
                .map(|_| pool[rng.random_range(0..pool.len())])
                .collect();
            if let Ok(v) = finite_f32(&s) {
                assert!(v.is_finite(), "{s}");
            }
            if let Ok(v) = non_negative_f32(&s) {
                assert!(v.is_finite() && v >= 0.0, "{s}");
            }
            if let Ok(v) = positive_f32(&s) {
                assert!(v.is_finite() && v > 0.0, "{s}");
            }
            if let Ok(v) = probability(&s) {
                assert!((0.0..=1.0).contains(&v), "{s}");
            }
            if let Ok(v) = positive_f64(&s) {
                assert!(v.is_finite() && v > 0.0, "{s}");
            }
            if let Ok(v) = non_negative_f64(&s) {
                assert!(v.is_finite() && v >= 0.0, "{s}");
            }
            if let Ok(v) = at_least_one(&s) {
                assert!(v >= 1, "{s}");
            }
        }
    }
}
