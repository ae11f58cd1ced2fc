//! Delimited text (CSV / TSV): a header `barcode,GENE1,GENE2,...`, then one row per cell,
//! the barcode first. Quoted fields are not supported (gene names and barcodes have no
//! delimiters in them).

use std::fmt::Write as _;
use std::path::Path;

use ndarray::Array2;

use crate::data::{CellMatrix, Values};
use crate::error::{Result, ScrnaError};
use crate::io::{read_text, write_bytes};

/// The delimiter a file name implies: tab for `.tsv` / `.txt` (optionally `.gz`), else comma.
pub fn delimiter_for(path: &Path) -> char {
    let name = path.to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".tsv") || name.ends_with(".txt") {
        '\t'
    } else {
        ','
    }
}

/// Reads a cells-as-rows delimited file (see the module docs); `delim = None` picks it
/// from the file name.
pub fn read_delimited(path: impl AsRef<Path>, delim: Option<char>, values: Values) -> Result<CellMatrix> {
    let path = path.as_ref();
    let delim = delim.unwrap_or_else(|| delimiter_for(path));
    let text = read_text(path)?;
    let parse = |line: usize, reason: String| ScrnaError::Parse {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| parse(1, "empty file: no header".into()))?;
    let genes: Vec<String> = header
        .trim_end_matches('\r')
        .split(delim)
        .skip(1)
        .map(str::to_string)
        .collect();
    let mut barcodes = Vec::new();
    let mut data = Vec::new();
    for (i, line) in lines {
        let mut fields = line.trim_end_matches('\r').split(delim);
        barcodes.push(fields.next().unwrap_or_default().to_string());
        let mut n = 0;
        for f in fields {
            let v: f64 = f
                .trim()
                .parse()
                .map_err(|_| parse(i + 1, format!("field {} {f:?} is not a number", n + 2)))?;
            data.push(v);
            n += 1;
        }
        if n != genes.len() {
            return Err(parse(
                i + 1,
                format!(
                    "{n} values for {} genes in the header{}",
                    genes.len(),
                    if n < genes.len() { " (truncated row?)" } else { "" }
                ),
            ));
        }
    }
    let x = Array2::from_shape_vec((barcodes.len(), genes.len()), data).expect("rows checked");
    CellMatrix::new(x, genes, barcodes, values)
}

/// Writes `m` as a cells-as-rows delimited file (shortest round-tripping decimal for each value).
pub fn write_delimited(path: impl AsRef<Path>, m: &CellMatrix, delim: Option<char>) -> Result<()> {
    let path = path.as_ref();
    let delim = delim.unwrap_or_else(|| delimiter_for(path));
    let mut s = String::from("barcode");
    for g in &m.genes {
        s.push(delim);
        s.push_str(g);
    }
    s.push('\n');
    for (bc, row) in m.barcodes.iter().zip(m.x.rows()) {
        s.push_str(bc);
        for v in row {
            s.push(delim);
            write!(s, "{v}").expect("write to String");
        }
        s.push('\n');
    }
    write_bytes(path, s.as_bytes())
}
