//! Model organisms: a synthetic fact world whose every fact's exposure is set, so that how
//! familiarity becomes density and stickiness can be measured causally on models trained from
//! scratch. This module writes the world ([`world`]); training and the study build on it.

pub mod train;
pub mod vocab;
pub mod world;

pub use train::{train, Net, TrainEvent, TrainOptions, TrainState};
pub use world::{build, parse_schedule, Fact, World, WorldOptions};
