//! Model organisms: a synthetic fact world whose every fact's exposure is set, so that how
//! familiarity becomes density and stickiness can be measured causally on models trained from
//! scratch. [`world`] writes the world, [`train`] trains a model on it, and [`study`] measures
//! what exposure does ([`summary`] and [`study_report`] summarize and report it).

pub mod adamw;
pub mod capacity;
pub mod capacity_report;
pub mod flips;
pub mod modularity;
pub mod proxytune;
mod relations;
pub mod shapes;
pub mod study;
pub mod study_report;
pub mod summary;
pub mod train;
pub mod tune;
pub mod vocab;
pub mod world;

pub use train::{train, Net, TrainEvent, TrainOptions, TrainState};
pub use world::{build, parse_schedule, Fact, World, WorldOptions};
