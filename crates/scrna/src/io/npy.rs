//! `.npy` matrices of any common numeric dtype, read as f64.

use std::path::Path;

use diffusion_testbed::TestbedError;
use diffusion_testbed::io::read_npy;
use ndarray::{Array2, ArrayD, Ix2};

use crate::data::{CellMatrix, Values};
use crate::error::{Result, ScrnaError};

fn widen<A: Copy + Into<f64>>(a: ArrayD<A>) -> ArrayD<f64> {
    a.mapv(Into::into)
}

/// Reads an `.npy` array of dtype f64, f32, i64, i32, i16, i8, u32, u16 or u8 as f64
/// (i64 values beyond 2^53 lose precision).
pub fn read_any(path: impl AsRef<Path>) -> Result<ArrayD<f64>> {
    let path = path.as_ref();
    let wrong =
        |e: &TestbedError| matches!(e, TestbedError::Npy { reason, .. } if reason.starts_with("wrong dtype"));
    macro_rules! attempt {
        ($t:ty, $conv:expr) => {
            match read_npy::<$t>(path) {
                Ok(a) => return Ok($conv(a)),
                Err(e) if wrong(&e) => {}
                Err(e) => return Err(map_truncated(path, e)),
            }
        };
    }
    attempt!(f64, |a| a);
    attempt!(f32, widen::<f32>);
    attempt!(i64, |a: ArrayD<i64>| a.mapv(|v| v as f64));
    attempt!(i32, widen::<i32>);
    attempt!(i16, widen::<i16>);
    attempt!(i8, widen::<i8>);
    attempt!(u32, widen::<u32>);
    attempt!(u16, widen::<u16>);
    attempt!(u8, widen::<u8>);
    Err(ScrnaError::invalid(
        "npy dtype",
        format!("{}: not a numeric dtype this reader knows", path.display()),
    ))
}

fn map_truncated(path: &Path, e: TestbedError) -> ScrnaError {
    match e {
        TestbedError::Npy { reason, .. } if reason.starts_with("truncated") => ScrnaError::Truncated {
            path: path.to_path_buf(),
            reason,
        },
        other => other.into(),
    }
}

/// Reads a 2-d `.npy` array.
pub fn read_matrix(path: impl AsRef<Path>) -> Result<Array2<f64>> {
    let path = path.as_ref();
    let a = read_any(path)?;
    let shape = a.shape().to_vec();
    a.into_dimensionality::<Ix2>().map_err(|_| ScrnaError::Shape {
        context: format!("{}: a cells x genes matrix", path.display()),
        expected: vec![0, 0],
        got: shape,
    })
}

/// Reads a cells x genes `.npy` matrix; names are generated (`gene_i`, `cell_i`).
pub fn read_cells(path: impl AsRef<Path>, values: Values) -> Result<CellMatrix> {
    CellMatrix::unnamed(read_matrix(path)?, values)
}

/// Writes the matrix as a float64 `.npy` (names are not stored; see [`crate::io::write_names`]).
pub fn write_matrix(path: impl AsRef<Path>, x: &Array2<f64>) -> Result<()> {
    Ok(diffusion_testbed::io::write_npy(path, &x.clone().into_dyn())?)
}
