//! Package layers: a base whose dependencies are a stack of layers, one
//! per package or small group, instead of one layer, so that a bump
//! rebuilds and pushes one package. The plan is resolved inside the `from`
//! image ([`pip`]); each package's layer has a key of what decides it
//! ([`plan`]); the stack stays within a layer budget ([`stack`]).

pub mod npm;
pub mod pip;
pub mod plan;
pub mod stack;
pub mod step;
