#![doc = include_str!("../README.md")]

pub mod classify;
pub mod diffgraph;
pub mod digress;
pub mod error;
pub mod gcn;
pub mod graph;
pub mod hetero;
pub mod io;
pub mod metrics;
pub mod sparse;

pub use error::{GraphError, Result};
pub use graph::Graph;
