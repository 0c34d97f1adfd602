//! Library choices ([`ctxsteer::choice::Choice`]) as clap value parsers: the names, with each
//! variant's doc comment as its help, and the value they stand for.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use ctxsteer::choice::Choice;

/// A parser for `--flag NAME` taking one of `T`'s names.
pub fn choice<T: Choice + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    choice_or::<T>(&[])
}

/// [`choice`], also taking the earlier names in `old` (earlier, current) as hidden aliases.
pub fn choice_or<T: Choice + Clone + Send + Sync>(
    old: &'static [(&'static str, &'static str)],
) -> impl TypedValueParser<Value = T> {
    let values = T::CHOICES.iter().map(move |c| {
        let mut v = PossibleValue::new(c.name);
        for (earlier, now) in old {
            if *now == c.name {
                v = v.alias(*earlier);
            }
        }
        let help: Vec<&str> = c
            .help
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match help.is_empty() {
            true => v,
            false => v.help(help.join(" ")),
        }
    });
    PossibleValuesParser::new(values)
        .map(|s| T::from_name(&s).expect("clap accepts only listed names"))
}
