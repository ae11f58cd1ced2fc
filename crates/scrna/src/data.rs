//! The cells x genes matrix with its gene names, barcodes and optional cell-type labels.

use ndarray::Array2;

use crate::error::{Result, ScrnaError};

/// Cell-type labels: one code per cell, indexing `names`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub codes: Vec<usize>,
    pub names: Vec<String>,
}

impl Labels {
    /// Checks every code indexes `names`.
    pub fn new(codes: Vec<usize>, names: Vec<String>) -> Result<Self> {
        if let Some((cell, &c)) = codes.iter().enumerate().find(|&(_, &c)| c >= names.len()) {
            return Err(ScrnaError::invalid(
                "labels",
                format!(
                    "cell {cell} has code {c}, but there are {} type names",
                    names.len()
                ),
            ));
        }
        Ok(Self { codes, names })
    }

    /// Codes from per-cell type names, in order of first appearance.
    pub fn from_names<S: AsRef<str>>(per_cell: &[S]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let codes = per_cell
            .iter()
            .map(|s| {
                let s = s.as_ref();
                match names.iter().position(|n| n == s) {
                    Some(i) => i,
                    None => {
                        names.push(s.to_string());
                        names.len() - 1
                    }
                }
            })
            .collect();
        Self { codes, names }
    }

    pub fn num_types(&self) -> usize {
        self.names.len()
    }

    /// The labels of the cells at `rows`.
    pub fn select(&self, rows: &[usize]) -> Self {
        Self {
            codes: rows.iter().map(|&r| self.codes[r]).collect(),
            names: self.names.clone(),
        }
    }
}

/// What a matrix's values are, which decides how they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Raw UMI counts: finite, non-negative whole numbers.
    Counts,
    /// Any finite values (normalised, log-transformed or generated expression).
    Real,
}

/// A cells x genes matrix (`x[[cell, gene]]`) with names. Values are checked on construction.
#[derive(Clone, Debug, PartialEq)]
pub struct CellMatrix {
    pub x: Array2<f64>,
    pub genes: Vec<String>,
    pub barcodes: Vec<String>,
    pub labels: Option<Labels>,
}

impl CellMatrix {
    /// Checks `x` (see [`Values`]) and that there is one gene name per column and one
    /// barcode per row.
    pub fn new(x: Array2<f64>, genes: Vec<String>, barcodes: Vec<String>, values: Values) -> Result<Self> {
        check_values(&x, values)?;
        let (cells, ngenes) = x.dim();
        if genes.len() != ngenes {
            return Err(ScrnaError::Length {
                what: "gene names",
                of: "genes (matrix columns)",
                expected: ngenes,
                got: genes.len(),
            });
        }
        if barcodes.len() != cells {
            return Err(ScrnaError::Length {
                what: "barcodes",
                of: "cells (matrix rows)",
                expected: cells,
                got: barcodes.len(),
            });
        }
        Ok(Self {
            x,
            genes,
            barcodes,
            labels: None,
        })
    }

    /// `x` with generated names `gene_0..`, `cell_0..`.
    pub fn unnamed(x: Array2<f64>, values: Values) -> Result<Self> {
        let (cells, genes) = x.dim();
        Self::new(
            x,
            (0..genes).map(|g| format!("gene_{g}")).collect(),
            (0..cells).map(|c| format!("cell_{c}")).collect(),
            values,
        )
    }

    /// Attaches one label per cell.
    pub fn with_labels(mut self, labels: Labels) -> Result<Self> {
        if labels.codes.len() != self.cells() {
            return Err(ScrnaError::Length {
                what: "cell-type labels",
                of: "cells",
                expected: self.cells(),
                got: labels.codes.len(),
            });
        }
        self.labels = Some(labels);
        Ok(self)
    }

    pub fn cells(&self) -> usize {
        self.x.nrows()
    }

    pub fn num_genes(&self) -> usize {
        self.x.ncols()
    }

    /// The cells at `rows` (in that order), with their barcodes and labels.
    pub fn select_cells(&self, rows: &[usize]) -> Self {
        Self {
            x: self.x.select(ndarray::Axis(0), rows),
            genes: self.genes.clone(),
            barcodes: rows.iter().map(|&r| self.barcodes[r].clone()).collect(),
            labels: self.labels.as_ref().map(|l| l.select(rows)),
        }
    }

    /// The genes at `cols` (in that order).
    pub fn select_genes(&self, cols: &[usize]) -> Self {
        Self {
            x: self.x.select(ndarray::Axis(1), cols),
            genes: cols.iter().map(|&c| self.genes[c].clone()).collect(),
            barcodes: self.barcodes.clone(),
            labels: self.labels.clone(),
        }
    }

    /// Column of each name in `names`; an unknown name is an error.
    pub fn gene_indices<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<usize>> {
        names
            .iter()
            .map(|n| {
                self.genes
                    .iter()
                    .position(|g| g == n.as_ref())
                    .ok_or_else(|| ScrnaError::Unknown {
                        what: "gene",
                        name: n.as_ref().to_string(),
                    })
            })
            .collect()
    }

    /// Total counts per cell.
    pub fn library_sizes(&self) -> Vec<f64> {
        self.x.rows().into_iter().map(|r| r.sum()).collect()
    }
}

/// Checks every value of `x` is finite and, for counts, a non-negative whole number.
pub fn check_values(x: &Array2<f64>, values: Values) -> Result<()> {
    for ((cell, gene), &v) in x.indexed_iter() {
        if !v.is_finite() {
            return Err(ScrnaError::NonFinite {
                what: "expression matrix",
                cell,
                gene,
                value: v,
            });
        }
        if values == Values::Counts {
            if v < 0.0 {
                return Err(ScrnaError::NegativeCount { cell, gene, value: v });
            }
            if v.fract() != 0.0 {
                return Err(ScrnaError::NonIntegerCount { cell, gene, value: v });
            }
        }
    }
    Ok(())
}
