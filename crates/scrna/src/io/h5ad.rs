//! AnnData `.h5ad` (the on-disk format of scanpy / anndata >= 0.8) through `hdf5-metno`:
//! `X` dense or CSR/CSC, `obs` / `var` dataframes with their string index, a categorical
//! `obs` column for cell types. Written files carry anndata's encoding attributes, so
//! `anndata.read_h5ad` opens them.

use std::path::Path;
use std::str::FromStr;

use hdf5::types::{VarLenAscii, VarLenUnicode};
use hdf5::{Conversion, Group, H5Type, Location};
use hdf5_metno as hdf5;
use ndarray::{Array1, Array2};

use crate::data::{CellMatrix, Labels, Values};
use crate::error::{Result, ScrnaError};

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> ScrnaError + '_ {
    move |e| ScrnaError::Hdf5 {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn vlu(s: &str) -> VarLenUnicode {
    // Only NUL bytes can fail; names never contain them.
    VarLenUnicode::from_str(&s.replace('\0', "")).expect("no NUL")
}

fn str_attr(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .shape(())
        .create(name)?
        .as_writer()
        .write_scalar(&vlu(value))
}

fn encoding(loc: &Location, kind: &str, version: &str) -> hdf5::Result<()> {
    str_attr(loc, "encoding-type", kind)?;
    str_attr(loc, "encoding-version", version)
}

fn write_strings(g: &Group, name: &str, values: &[String]) -> hdf5::Result<()> {
    let data: Vec<VarLenUnicode> = values.iter().map(|s| vlu(s)).collect();
    let ds = g
        .new_dataset_builder()
        .with_data(&Array1::from(data))
        .create(name)?;
    encoding(&ds, "string-array", "0.2.0")
}

fn write_frame(
    parent: &Group,
    name: &str,
    index: &[String],
    labels: Option<(&str, &Labels)>,
) -> hdf5::Result<()> {
    let g = parent.create_group(name)?;
    encoding(&g, "dataframe", "0.2.0")?;
    str_attr(&g, "_index", "_index")?;
    let cols: Vec<VarLenUnicode> = labels.iter().map(|(k, _)| vlu(k)).collect();
    g.new_attr_builder()
        .with_data(&Array1::from(cols))
        .create("column-order")?;
    write_strings(&g, "_index", index)?;
    if let Some((key, l)) = labels {
        let c = g.create_group(key)?;
        encoding(&c, "categorical", "0.2.0")?;
        c.new_attr::<bool>()
            .shape(())
            .create("ordered")?
            .as_writer()
            .write_scalar(&false)?;
        write_strings(&c, "categories", &l.names)?;
        let codes: Vec<i32> = l.codes.iter().map(|&v| v as i32).collect();
        let ds = c
            .new_dataset_builder()
            .with_data(&Array1::from(codes))
            .create("codes")?;
        encoding(&ds, "array", "0.2.0")?;
    }
    Ok(())
}

/// Writes `m` as `.h5ad` (atomically): `X` dense float64, `obs` indexed by the barcodes
/// with the labels as categorical column `labels_key`, `var` indexed by the gene names.
pub fn write_h5ad(path: impl AsRef<Path>, m: &CellMatrix, labels_key: &str) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .suffix(".h5ad.tmp")
        .tempfile_in(dir)
        .map_err(ScrnaError::io(dir))?
        .into_temp_path();
    {
        let f = hdf5::File::create(&tmp).map_err(h5err(path))?;
        let write = || -> hdf5::Result<()> {
            encoding(&f, "anndata", "0.1.0")?;
            let x = f.new_dataset_builder().with_data(&m.x).create("X")?;
            encoding(&x, "array", "0.2.0")?;
            write_frame(&f, "obs", &m.barcodes, m.labels.as_ref().map(|l| (labels_key, l)))?;
            write_frame(&f, "var", &m.genes, None)?;
            for g in ["uns", "obsm", "varm", "obsp", "varp", "layers"] {
                let grp = f.create_group(g)?;
                encoding(&grp, "dict", "0.1.0")?;
            }
            Ok(())
        };
        write().map_err(h5err(path))?;
        f.close().map_err(h5err(path))?;
    }
    tmp.persist(path).map_err(|e| ScrnaError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })
}

fn read_strings(g: &Group, name: &str) -> hdf5::Result<Vec<String>> {
    let ds = g.dataset(name)?;
    match ds.read_raw::<VarLenUnicode>() {
        Ok(v) => Ok(v.iter().map(|s| s.as_str().to_string()).collect()),
        Err(_) => Ok(ds
            .read_raw::<VarLenAscii>()?
            .iter()
            .map(|s| s.as_str().to_string())
            .collect()),
    }
}

fn read_str_attr(loc: &Location, name: &str) -> hdf5::Result<String> {
    let a = loc.attr(name)?;
    match a.as_reader().read_scalar::<VarLenUnicode>() {
        Ok(s) => Ok(s.as_str().to_string()),
        Err(_) => Ok(a.as_reader().read_scalar::<VarLenAscii>()?.as_str().to_string()),
    }
}

fn read_ints<T: H5Type + Copy>(g: &Group, name: &str) -> hdf5::Result<Vec<T>> {
    g.dataset(name)?
        .as_reader()
        .conversion(Conversion::Hard)
        .read_raw::<T>()
}

/// The frame's index (`_index` attribute names the column; anndata's default `_index`).
fn frame_index(g: &Group) -> hdf5::Result<Vec<String>> {
    let key = read_str_attr(g, "_index").unwrap_or_else(|_| "_index".into());
    read_strings(g, &key)
}

/// `X` as a dense matrix: a dataset, or a `csr_matrix` / `csc_matrix` group.
fn read_x(f: &hdf5::File, path: &Path) -> Result<Array2<f64>> {
    let e = h5err(path);
    if let Ok(ds) = f.dataset("X") {
        return ds
            .as_reader()
            .conversion(Conversion::Hard)
            .read_2d::<f64>()
            .map_err(e);
    }
    let g = f.group("X").map_err(&e)?;
    let kind = read_str_attr(&g, "encoding-type").map_err(&e)?;
    let shape: Vec<i64> = g
        .attr("shape")
        .and_then(|a| a.as_reader().conversion(Conversion::Hard).read_raw())
        .map_err(&e)?;
    let (rows, cols) = match shape.as_slice() {
        &[r, c] if r >= 0 && c >= 0 => (r as usize, c as usize),
        _ => {
            return Err(ScrnaError::invalid(
                "h5ad X",
                format!("shape attribute {shape:?}"),
            ));
        }
    };
    let data: Vec<f64> = g
        .dataset("data")
        .and_then(|d| d.as_reader().conversion(Conversion::Hard).read_raw())
        .map_err(&e)?;
    let indices: Vec<i64> = read_ints(&g, "indices").map_err(&e)?;
    let indptr: Vec<i64> = read_ints(&g, "indptr").map_err(&e)?;
    let csr = match kind.as_str() {
        "csr_matrix" => true,
        "csc_matrix" => false,
        other => {
            return Err(ScrnaError::invalid(
                "h5ad X",
                format!("unknown encoding {other:?}"),
            ));
        }
    };
    let (major, minor) = if csr { (rows, cols) } else { (cols, rows) };
    let bad = || ScrnaError::invalid("h5ad X", "sparse index arrays are inconsistent (truncated?)");
    if indptr.len() != major + 1 || data.len() != indices.len() || indptr[major] as usize != data.len() {
        return Err(bad());
    }
    let mut x = Array2::zeros((rows, cols));
    for i in 0..major {
        let (a, b) = (indptr[i], indptr[i + 1]);
        if a < 0 || b < a || b as usize > data.len() {
            return Err(bad());
        }
        for k in a as usize..b as usize {
            let j = indices[k];
            if j < 0 || j as usize >= minor {
                return Err(bad());
            }
            if csr {
                x[[i, j as usize]] += data[k];
            } else {
                x[[j as usize, i]] += data[k];
            }
        }
    }
    Ok(x)
}

/// Reads an `.h5ad`: `X` (dense or sparse), the `obs` and `var` indices as barcodes and
/// gene names, and, when `labels_key` is given, that categorical `obs` column as labels.
pub fn read_h5ad(path: impl AsRef<Path>, values: Values, labels_key: Option<&str>) -> Result<CellMatrix> {
    let path = path.as_ref();
    let f = hdf5::File::open(path).map_err(|e| {
        let head = std::fs::read(path)
            .map(|b| b.get(..8).map(<[u8]>::to_vec))
            .ok()
            .flatten();
        if head.as_deref() == Some(b"\x89HDF\r\n\x1a\n") {
            ScrnaError::Truncated {
                path: path.to_path_buf(),
                reason: format!("an HDF5 file that cannot be opened: {e}"),
            }
        } else {
            ScrnaError::Hdf5 {
                path: path.to_path_buf(),
                reason: format!("not an HDF5 file: {e}"),
            }
        }
    })?;
    let e = h5err(path);
    let x = read_x(&f, path)?;
    let obs = f.group("obs").map_err(&e)?;
    let barcodes = frame_index(&obs).map_err(&e)?;
    let genes = frame_index(&f.group("var").map_err(&e)?).map_err(&e)?;
    let m = CellMatrix::new(x, genes, barcodes, values)?;
    match labels_key {
        None => Ok(m),
        Some(key) => {
            let c = obs.group(key).map_err(|_| ScrnaError::Unknown {
                what: "obs column",
                name: key.to_string(),
            })?;
            let names = read_strings(&c, "categories").map_err(&e)?;
            let codes: Vec<i64> = read_ints(&c, "codes").map_err(&e)?;
            if let Some(&neg) = codes.iter().find(|&&v| v < 0) {
                return Err(ScrnaError::invalid(
                    "h5ad labels",
                    format!("code {neg} (a missing label)"),
                ));
            }
            m.with_labels(Labels::new(codes.iter().map(|&v| v as usize).collect(), names)?)
        }
    }
}
