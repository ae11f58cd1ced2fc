//! Paths of the crate's data files (a missing file fails the test).
#![allow(dead_code)]

use std::path::PathBuf;

pub fn data(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join(name);
    assert!(p.exists(), "missing test data {}", p.display());
    p
}
