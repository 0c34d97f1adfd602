//! Library choices ([`ctxsteer::choice::Choice`]) as clap value parsers: the names, with each
//! variant's doc comment as its help, and the value they stand for.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use ctxsteer::choice::Choice;

/// A parser for `--flag NAME` taking one of `T`'s names.
pub fn choice<T: Choice + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    let values = T::CHOICES.iter().map(|c| {
        let help: Vec<&str> = c
            .help
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match help.is_empty() {
            true => PossibleValue::new(c.name),
            false => PossibleValue::new(c.name).help(help.join(" ")),
        }
    });
    PossibleValuesParser::new(values)
        .map(|s| T::from_name(&s).expect("clap accepts only listed names"))
}
