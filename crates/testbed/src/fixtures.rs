//! The one way tests find their data: the workspace's `fixtures/` folder, which the
//! repository carries (each subfolder has a README with its source, licence and the
//! script that rebuilds it). A missing file is an error, never a reason to skip.

use std::path::PathBuf;

use crate::error::{Result, TestbedError};

/// The workspace's `fixtures/` folder.
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

/// The path of `fixtures/<relative>`, or [`TestbedError::MissingFixture`] when the file
/// is not there.
pub fn path(relative: &str) -> Result<PathBuf> {
    let path = dir().join(relative);
    if path.exists() {
        Ok(path)
    } else {
        Err(TestbedError::MissingFixture { path })
    }
}
