//! `.npy` / `.npz` helpers: typed reads with clear errors, atomic writes.
//!
//! Reads accept float64 files as f64 and float32 files as f32; [`read_npy_f64`] also
//! widens float32 data, since reference data is sometimes stored narrower. Writes go to a
//! temporary file in the target's directory and are renamed into place, so a reader never
//! sees a half-written file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, Ix2};
use ndarray_npy::{
    NpzReader, NpzWriter, ReadNpyError, ReadNpyExt, ReadNpzError, ReadableElement, WritableElement,
    WriteNpyExt,
};

use crate::error::{Result, TestbedError};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TestbedError + '_ {
    move |source| TestbedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn npy_reason(e: &ReadNpyError) -> String {
    match e {
        ReadNpyError::MissingData => {
            "truncated: the file ends before all the data its header declares".into()
        }
        ReadNpyError::WrongDescriptor(d) => format!("wrong dtype: the file holds {d}"),
        ReadNpyError::ExtraBytes(n) => format!("{n} unexpected bytes after the array data"),
        ReadNpyError::ParseHeader(h) => format!("not a valid .npy header: {h}"),
        other => other.to_string(),
    }
}

fn npy_err(path: &Path, e: ReadNpyError) -> TestbedError {
    match e {
        ReadNpyError::Io(source) if source.kind() != std::io::ErrorKind::UnexpectedEof => TestbedError::Io {
            path: path.to_path_buf(),
            source,
        },
        ReadNpyError::Io(_) => TestbedError::Npy {
            path: path.to_path_buf(),
            reason: "truncated: the file ends inside the header".into(),
        },
        other => TestbedError::Npy {
            path: path.to_path_buf(),
            reason: npy_reason(&other),
        },
    }
}

/// Reads an `.npy` file of element type `A` (f64 for `<f8`, f32 for `<f4`, ...).
pub fn read_npy<A: ReadableElement + Clone>(path: impl AsRef<Path>) -> Result<ArrayD<A>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let a = ArrayD::<A>::read_npy(BufReader::new(file)).map_err(|e| npy_err(path, e))?;
    // Fortran-ordered files come back column-major; callers expect row-major.
    Ok(standard(a))
}

/// Reads a float64 or float32 `.npy` file as f64.
pub fn read_npy_f64(path: impl AsRef<Path>) -> Result<ArrayD<f64>> {
    let path = path.as_ref();
    match read_npy::<f64>(path) {
        Err(TestbedError::Npy { reason, .. }) if reason.starts_with("wrong dtype") => {
            read_npy::<f32>(path).map(|a| a.mapv(f64::from))
        }
        other => other,
    }
}

/// Reads a 2-D f64 array, checking its shape; `None` in `expected` accepts any extent.
pub fn read_npy_2d(path: impl AsRef<Path>, expected: [Option<usize>; 2]) -> Result<Array2<f64>> {
    let path = path.as_ref();
    let a = read_npy_f64(path)?;
    check_shape_2d(a, expected, &path.display().to_string())
}

fn check_shape_2d(a: ArrayD<f64>, expected: [Option<usize>; 2], context: &str) -> Result<Array2<f64>> {
    let fits = a.ndim() == 2
        && expected
            .iter()
            .zip(a.shape())
            .all(|(e, &g)| e.is_none_or(|e| e == g));
    if !fits {
        let show = |e: Option<usize>| e.map_or("any".to_string(), |v| v.to_string());
        return Err(TestbedError::shape(
            context,
            format!("[{}, {}]", show(expected[0]), show(expected[1])),
            a.shape(),
        ));
    }
    Ok(a.into_dimensionality::<Ix2>().expect("ndim checked"))
}

fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<&File>) -> Result<()>) -> Result<()> {
    diffusion_core::fs::write_atomic_with(path, write, |source| TestbedError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `array` as `.npy` atomically (f64 as `<f8`, f32 as `<f4`).
pub fn write_npy<A: WritableElement>(path: impl AsRef<Path>, array: &ArrayD<A>) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, |w| {
        array.write_npy(w).map_err(|e| TestbedError::Npy {
            path: path.to_path_buf(),
            reason: format!("cannot write: {e}"),
        })
    })
}

/// Writes named f64 arrays as an uncompressed `.npz` atomically.
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &ArrayD<f64>)]) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, |w| {
        let npz_err = |e: ndarray_npy::WriteNpzError| TestbedError::Npy {
            path: path.to_path_buf(),
            reason: format!("cannot write npz: {e}"),
        };
        // The zip writer needs Seek; BufWriter<&File> provides it.
        let mut npz = NpzWriter::new(SeekWriter(w));
        for (name, a) in arrays {
            npz.add_array(*name, *a).map_err(npz_err)?;
        }
        npz.finish().map_err(npz_err)?;
        Ok(())
    })
}

/// Adapts `&mut W` so the npz writer can take it by value.
struct SeekWriter<'a, W: Write + Seek>(&'a mut W);

impl<W: Write + Seek> Write for SeekWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Seek> Seek for SeekWriter<'_, W> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

/// An open `.npz` archive.
pub struct NpzFile {
    path: PathBuf,
    reader: NpzReader<BufReader<File>>,
}

impl std::fmt::Debug for NpzFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpzFile").field("path", &self.path).finish()
    }
}

impl NpzFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io_err(&path))?;
        let reader = NpzReader::new(BufReader::new(file)).map_err(|e| TestbedError::Npy {
            path: path.clone(),
            reason: format!("not a readable .npz archive: {e}"),
        })?;
        Ok(Self { path, reader })
    }

    /// Array names (without the `.npy` suffix).
    pub fn names(&mut self) -> Result<Vec<String>> {
        self.reader.names().map_err(|e| TestbedError::Npy {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Reads array `name` as f64 (float32 data is widened).
    pub fn array_f64(&mut self, name: &str) -> Result<ArrayD<f64>> {
        match self.reader.by_name::<_, ndarray::IxDyn>(name) {
            Ok(a) => Ok(standard(a)),
            Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => {
                let a: ArrayD<f32> = self.reader.by_name(name).map_err(|e| self.npz_err(name, e))?;
                Ok(standard(a).mapv(f64::from))
            }
            Err(e) => Err(self.npz_err(name, e)),
        }
    }

    /// Reads a 2-D f64 array, checking its shape (`None` accepts any extent).
    pub fn array_2d(&mut self, name: &str, expected: [Option<usize>; 2]) -> Result<Array2<f64>> {
        let a = self.array_f64(name)?;
        check_shape_2d(a, expected, &format!("{}:{name}", self.path.display()))
    }

    fn npz_err(&self, name: &str, e: ReadNpzError) -> TestbedError {
        match e {
            ReadNpzError::Zip(zip_err) if zip_err.to_string().contains("not found") => {
                TestbedError::MissingArray {
                    path: self.path.clone(),
                    name: name.to_string(),
                }
            }
            ReadNpzError::Npy(npy) => TestbedError::Npy {
                path: self.path.clone(),
                reason: format!("array {name:?}: {}", npy_reason(&npy)),
            },
            other => TestbedError::Npy {
                path: self.path.clone(),
                reason: format!("array {name:?}: {other}"),
            },
        }
    }
}

fn standard<A: Clone>(a: ArrayD<A>) -> ArrayD<A> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{IxDyn, array};

    fn tmpdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn npy_round_trips_f64_and_f32() {
        let dir = tmpdir();
        let p = dir.path().join("a.npy");
        let a = array![[1.0, 2.5], [-3.0, 1e-300]].into_dyn();
        write_npy(&p, &a).unwrap();
        assert_eq!(read_npy::<f64>(&p).unwrap(), a);
        assert_eq!(
            read_npy_2d(&p, [Some(2), None]).unwrap(),
            a.clone().into_dimensionality().unwrap()
        );
        let b = a.mapv(|v| v as f32);
        write_npy(&p, &b).unwrap();
        assert_eq!(read_npy::<f32>(&p).unwrap(), b);
        // f32 data widens to f64 on request, but a typed f64 read says what is wrong.
        assert_eq!(read_npy_f64(&p).unwrap(), b.mapv(f64::from));
        let err = read_npy::<f64>(&p).unwrap_err().to_string();
        assert!(err.contains("wrong dtype"), "{err}");
        // Only the final file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn wrong_shape_and_truncation_are_clear_errors() {
        let dir = tmpdir();
        let p = dir.path().join("a.npy");
        write_npy(&p, &ArrayD::<f64>::zeros(IxDyn(&[4, 3]))).unwrap();
        assert!(matches!(
            read_npy_2d(&p, [Some(4), Some(2)]),
            Err(TestbedError::ShapeMismatch { .. })
        ));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let err = read_npy::<f64>(&p).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&p, &bytes[..20]).unwrap();
        assert!(matches!(read_npy::<f64>(&p), Err(TestbedError::Npy { .. })));
        assert!(matches!(
            read_npy::<f64>(dir.path().join("missing.npy")),
            Err(TestbedError::Io { .. })
        ));
    }

    #[test]
    fn npz_round_trips_and_reports_missing_names() {
        let dir = tmpdir();
        let p = dir.path().join("a.npz");
        let a = array![[1.0, 2.0]].into_dyn();
        let b = array![3.0, 4.0, 5.0].into_dyn();
        write_npz(&p, &[("run/x", &a), ("b", &b)]).unwrap();
        let mut f = NpzFile::open(&p).unwrap();
        let mut names = f.names().unwrap();
        names.sort();
        assert_eq!(names, ["b", "run/x"]);
        assert_eq!(f.array_f64("run/x").unwrap(), a);
        assert_eq!(f.array_2d("run/x", [Some(1), Some(2)]).unwrap().shape(), &[1, 2]);
        assert!(f.array_2d("b", [None, None]).is_err());
        assert!(matches!(
            f.array_f64("nope"),
            Err(TestbedError::MissingArray { .. })
        ));
        std::fs::write(&p, b"not a zip").unwrap();
        assert!(matches!(NpzFile::open(&p), Err(TestbedError::Npy { .. })));
    }
}
