//! The methods a benchmark compares, one file per family, and the one registration that ties
//! each [`Method`] to what its dev sweep needs and the settings it tries.
//!
//! A new method is a variant of [`Method`] (its name, with a doc line), a file here with its
//! grid function, and one row in [`registered`].

use super::{Method, Need, Resources, Setting};
use crate::error::Result;
use crate::model::Model;

mod edit;
mod heads;
mod iti;
mod prompting;
mod proxy;
mod steer;

pub use heads::{context_heads_from_patch, heads_from_patch};
pub use proxy::PROXY_ALPHAS;

/// A method's grid: the settings its dev sweep tries, built from the artefacts.
type Grid = fn(&Model, Method, &Resources) -> Result<Vec<Setting>>;

/// Every method's registration: what its sweep needs ([`Need`]) and its grid.
fn registered(m: Method) -> (&'static [Need], Grid) {
    use Need::{Edit, Gate, HeadProbes, Probes, Proxy, RankedHeads};
    match m {
        Method::None => (&[], prompting::none),
        Method::Instruct => (&[], prompting::instruct),
        Method::Cad => (&[], prompting::cad),
        Method::AdaCad => (&[], prompting::adacad),
        Method::Steer => (&[Probes], steer::steer),
        Method::SteerGated => (&[Probes], steer::steer_gated),
        Method::SteerMulti => (&[Probes], steer::steer_multi),
        Method::Clamp => (&[Probes], steer::clamp),
        Method::Iti => (&[HeadProbes], iti::iti),
        Method::Heads => (&[RankedHeads], heads::heads),
        Method::HeadsGated => (&[RankedHeads, Gate], heads::heads),
        Method::Reft => (&[Edit], edit::reft),
        Method::ReftCad => (&[Edit], edit::reft_cad),
        Method::ReftGated => (&[Edit, Gate], edit::reft_gated),
        Method::Proxy => (&[Proxy], proxy::proxy),
    }
}

impl Method {
    /// What the method's sweep needs.
    pub fn needs(self) -> &'static [Need] {
        registered(self).0
    }
}

/// The settings a method's dev sweep tries.
pub fn grid(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    (registered(m).1)(model, m, res)
}
