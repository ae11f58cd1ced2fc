//! 10x Genomics' Matrix Market layout: a directory with `matrix.mtx` (genes x cells,
//! `coordinate` format, 1-based), `features.tsv` (or `genes.tsv` for Cell Ranger 2; the
//! gene name is column 2 when present, else column 1) and `barcodes.tsv`; each file may
//! be gzipped (`.gz`), as Cell Ranger 3 writes them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::data::{CellMatrix, Values};
use crate::error::{Result, ScrnaError};
use crate::io::{read_column, read_text, write_bytes, write_names};

fn existing(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    for n in names {
        for suffix in ["", ".gz"] {
            let p = dir.join(format!("{n}{suffix}"));
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Err(ScrnaError::Io {
        path: dir.join(names[0]),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("none of {names:?} (or .gz)"),
        ),
    })
}

/// Parses a Matrix Market `coordinate` or `array` file of real or integer values into a
/// dense `rows x cols` matrix (duplicate entries are summed, as scipy does).
pub fn read_mtx(path: impl AsRef<Path>) -> Result<Array2<f64>> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let parse = |line: usize, reason: String| ScrnaError::Parse {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    let (_, banner) = lines.next().ok_or_else(|| parse(1, "empty file".into()))?;
    let words: Vec<String> = banner.split_whitespace().map(str::to_lowercase).collect();
    if words.len() < 4 || words[0] != "%%matrixmarket" || words[1] != "matrix" {
        return Err(parse(1, format!("not a Matrix Market matrix banner: {banner:?}")));
    }
    let coordinate = match words[2].as_str() {
        "coordinate" => true,
        "array" => false,
        other => return Err(parse(1, format!("unknown format {other:?}"))),
    };
    if !matches!(words[3].as_str(), "real" | "integer" | "double") {
        return Err(parse(1, format!("field {:?} is not real or integer", words[3])));
    }
    if words.get(4).is_some_and(|s| s != "general") {
        return Err(parse(
            1,
            format!("symmetry {:?} is not supported (general only)", words[4]),
        ));
    }
    let mut body = lines.filter(|(_, l)| !l.starts_with('%') && !l.trim().is_empty());
    let (hl, size) = body.next().ok_or_else(|| ScrnaError::Truncated {
        path: path.to_path_buf(),
        reason: "no size line".into(),
    })?;
    let dims: Vec<usize> = size
        .split_whitespace()
        .map(|s| {
            s.parse()
                .map_err(|_| parse(hl + 1, format!("bad size line {size:?}")))
        })
        .collect::<Result<_>>()?;
    let (rows, cols, entries) = match (coordinate, dims.as_slice()) {
        (true, &[r, c, n]) => (r, c, n),
        (false, &[r, c]) => (r, c, r * c),
        _ => return Err(parse(hl + 1, format!("bad size line {size:?}"))),
    };
    let mut x = Array2::<f64>::zeros((rows, cols));
    let mut seen = 0;
    for (i, line) in body {
        if seen == entries {
            return Err(parse(
                i + 1,
                format!("more than the {entries} entries the size line declares"),
            ));
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| -> Result<f64> {
            s.parse()
                .map_err(|_| parse(i + 1, format!("{s:?} is not a number")))
        };
        if coordinate {
            if f.len() != 3 {
                return Err(parse(i + 1, format!("need `row col value`, got {line:?}")));
            }
            let idx = |s: &str, n: usize, what: &str| -> Result<usize> {
                match s.parse::<usize>() {
                    Ok(v) if (1..=n).contains(&v) => Ok(v - 1),
                    _ => Err(parse(i + 1, format!("{what} index {s:?} outside 1..={n}"))),
                }
            };
            let (r, c) = (idx(f[0], rows, "row")?, idx(f[1], cols, "column")?);
            x[[r, c]] += num(f[2])?;
        } else {
            if f.len() != 1 {
                return Err(parse(i + 1, format!("need one value, got {line:?}")));
            }
            // `array` is column-major.
            x[[seen % rows, seen / rows]] = num(f[0])?;
        }
        seen += 1;
    }
    if seen < entries {
        return Err(ScrnaError::Truncated {
            path: path.to_path_buf(),
            reason: format!("{seen} of the {entries} entries the size line declares"),
        });
    }
    Ok(x)
}

/// Reads a 10x directory (see the module docs) into cells x genes.
pub fn read_10x(dir: impl AsRef<Path>, values: Values) -> Result<CellMatrix> {
    let dir = dir.as_ref();
    let genes_x_cells = read_mtx(existing(dir, &["matrix.mtx"])?)?;
    let features = existing(dir, &["features.tsv", "genes.tsv"])?;
    let first = read_text(&features)?;
    let col = usize::from(first.lines().next().is_some_and(|l| l.split('\t').count() >= 2));
    let genes = read_column(&features, col)?;
    let barcodes = read_column(&existing(dir, &["barcodes.tsv"])?, 0)?;
    if genes.len() != genes_x_cells.nrows() {
        return Err(ScrnaError::Length {
            what: "gene list (features.tsv)",
            of: "matrix rows",
            expected: genes_x_cells.nrows(),
            got: genes.len(),
        });
    }
    CellMatrix::new(
        genes_x_cells.reversed_axes().as_standard_layout().into_owned(),
        genes,
        barcodes,
        values,
    )
}

/// Writes `m` as a 10x directory: `matrix.mtx` (genes x cells, only non-zero entries,
/// `integer` when every value is whole), `features.tsv` (`name\tname\tGene Expression`)
/// and `barcodes.tsv`, uncompressed.
pub fn write_10x(dir: impl AsRef<Path>, m: &CellMatrix) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(ScrnaError::io(dir))?;
    let integer = m.x.iter().all(|v| v.fract() == 0.0);
    let nnz = m.x.iter().filter(|&&v| v != 0.0).count();
    let mut s = format!(
        "%%MatrixMarket matrix coordinate {} general\n{} {} {nnz}\n",
        if integer { "integer" } else { "real" },
        m.num_genes(),
        m.cells()
    );
    for (c, row) in m.x.rows().into_iter().enumerate() {
        for (g, &v) in row.iter().enumerate() {
            if v != 0.0 {
                writeln!(s, "{} {} {v}", g + 1, c + 1).expect("write to String");
            }
        }
    }
    write_bytes(&dir.join("matrix.mtx"), s.as_bytes())?;
    let features: Vec<String> = m
        .genes
        .iter()
        .map(|g| format!("{g}\t{g}\tGene Expression"))
        .collect();
    write_names(dir.join("features.tsv"), &features)?;
    write_names(dir.join("barcodes.tsv"), &m.barcodes)
}
