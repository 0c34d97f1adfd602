//! Closed sets of named choices (a form, a method, a probe target …) that a front end can
//! offer by name, without the library knowing any command-line parser.
//!
//! [`choice_enum!`](crate::choice_enum) declares an enum and its [`Choice`] table at once: each
//! variant gets its user-facing name, and its doc comment becomes its help text.

/// One named value and its help text.
pub struct Named<T: 'static> {
    pub name: &'static str,
    pub value: T,
    pub help: &'static str,
}

/// A type whose values are chosen by name.
pub trait Choice: Sized + Copy + PartialEq + 'static {
    const CHOICES: &'static [Named<Self>];

    /// The value called `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    }

    /// This value's name.
    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|c| c.value == self)
            .map_or("?", |c| c.name)
    }

    /// Every name, comma-separated, for messages.
    fn names() -> String {
        Self::CHOICES
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Declare an enum whose variants are chosen by name: `Variant = "name"`, with the variant's
/// doc comment as its help. Other attributes on the enum (derives, serde) pass through, and a
/// variant may carry `#[serde(...)]`.
#[macro_export]
macro_rules! choice_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($sattr:tt)*)])?
                $variant:ident = $label:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                $(#[doc = $doc])*
                $(#[serde($($sattr)*)])?
                $variant,
            )*
        }

        impl $crate::choice::Choice for $name {
            const CHOICES: &'static [$crate::choice::Named<Self>] = &[
                $(
                    $crate::choice::Named {
                        name: $label,
                        value: $name::$variant,
                        help: concat!($($doc, "\n"),*),
                    },
                )*
            ];
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Choice;

    crate::choice_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Colour {
            /// The first.
            /// Second line.
            Red = "red",
            DarkBlue = "dark-blue",
        }
    }

    #[test]
    fn names_round_trip_and_docs_become_help() {
        assert_eq!(Colour::from_name("dark-blue"), Some(Colour::DarkBlue));
        assert_eq!(Colour::from_name("blue"), None);
        assert_eq!(Colour::Red.name(), "red");
        assert_eq!(Colour::names(), "red, dark-blue");
        assert_eq!(Colour::CHOICES[0].help, " The first.\n Second line.\n");
        assert_eq!(Colour::CHOICES[1].help, "");
    }
}
