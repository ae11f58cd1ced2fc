//! # diffusion-graph
//!
//! Graph diffusion and the metrics graph-generation papers report.
//!
//! - [`graph`]: [`Graph`], undirected simple graphs with optional node types.
//! - [`io`]: edge lists, the shared data's JSON, GraphML (networkx reads it).
//! - [`metrics`]: degree / clustering / 4-node orbit / spectral statistics, MMD^2 with the
//!   Gaussian-EMD, Gaussian-TV and Gaussian kernels of GraphRNN/GRAN/GDSS, validity,
//!   uniqueness and novelty (exact isomorphism, planarity).

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
