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
