//! Readers and writers for the formats count matrices come in: `.npy`, CSV/TSV, 10x Matrix
//! Market directories, the shipped PBMC set and (feature `h5ad`) AnnData `.h5ad`.
//! Every writer is atomic (temporary file, then rename).

pub mod mtx;
pub mod npy;
pub mod pbmc;
pub mod text;

#[cfg(feature = "h5ad")]
pub mod h5ad;

use std::io::Read;
use std::path::Path;

use crate::error::{Result, ScrnaError};

/// Reads a whole text file, gunzipping it when its name ends in `.gz`.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(ScrnaError::io(path))?;
    let mut s = String::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let res = if gz {
        flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)).read_to_string(&mut s)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut s)
    };
    res.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ScrnaError::Truncated {
                path: path.to_path_buf(),
                reason: "the compressed stream ends early".into(),
            }
        } else {
            ScrnaError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    Ok(s)
}

/// Writes `bytes` atomically.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(diffusion_train::io::write_atomic(path, bytes)?)
}

/// One name per line (the first tab-separated field; blank lines at the end ignored).
pub fn read_names(path: impl AsRef<Path>) -> Result<Vec<String>> {
    read_column(path.as_ref(), 0)
}

/// Field `col` (tab-separated) of every line; a line without it is a parse error.
pub(crate) fn read_column(path: &Path, col: usize) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.trim_end_matches(['\n', '\r']).lines().enumerate() {
        let field = line
            .trim_end_matches('\r')
            .split('\t')
            .nth(col)
            .ok_or_else(|| ScrnaError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("no field {} in {line:?}", col + 1),
            })?;
        out.push(field.to_string());
    }
    if text.trim().is_empty() {
        out.clear();
    }
    Ok(out)
}

/// Writes one name per line.
pub fn write_names<S: AsRef<str>>(path: impl AsRef<Path>, names: &[S]) -> Result<()> {
    let mut s = String::new();
    for n in names {
        s.push_str(n.as_ref());
        s.push('\n');
    }
    write_bytes(path.as_ref(), s.as_bytes())
}
