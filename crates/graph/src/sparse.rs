//! Sparse (CSR) normalised adjacency matrices and their products with dense node features.

use diffusion_nn::Float;
use ndarray::Array2;
use rayon::prelude::*;

use crate::error::{GraphError, Result};
use crate::graph::Graph;

/// A square sparse matrix in compressed-row form with f64 values.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    n: usize,
    indptr: Vec<usize>,
    indices: Vec<usize>,
    values: Vec<f64>,
}

impl Csr {
    /// From `(row, col, value)` triplets; repeated entries are summed.
    pub fn from_triplets(n: usize, mut t: Vec<(usize, usize, f64)>) -> Result<Self> {
        for &(r, c, v) in &t {
            for i in [r, c] {
                if i >= n {
                    return Err(GraphError::NodeOutOfRange { index: i, n });
                }
            }
            if !v.is_finite() {
                return Err(GraphError::invalid("sparse entry", format!("({r}, {c}) = {v}")));
            }
        }
        t.sort_by_key(|&(r, c, _)| (r, c));
        let mut indptr = vec![0; n + 1];
        let (mut indices, mut values): (Vec<usize>, Vec<f64>) = (Vec::new(), Vec::new());
        let mut last = None;
        for (r, c, v) in t {
            if last == Some((r, c)) {
                *values.last_mut().expect("entry exists") += v;
                continue;
            }
            last = Some((r, c));
            indices.push(c);
            values.push(v);
            indptr[r + 1] += 1;
        }
        for r in 0..n {
            indptr[r + 1] += indptr[r];
        }
        Ok(Self {
            n,
            indptr,
            indices,
            values,
        })
    }

    /// Dimension.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Stored entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Row `r` as `(columns, values)`.
    pub fn row(&self, r: usize) -> (&[usize], &[f64]) {
        let s = self.indptr[r]..self.indptr[r + 1];
        (&self.indices[s.clone()], &self.values[s])
    }

    /// Dense row-major copy.
    pub fn to_dense(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.n * self.n];
        for r in 0..self.n {
            let (c, v) = self.row(r);
            for (&c, &v) in c.iter().zip(v) {
                d[r * self.n + c] = v;
            }
        }
        d
    }

    /// The transpose.
    pub fn transpose(&self) -> Self {
        let mut t = Vec::with_capacity(self.nnz());
        for r in 0..self.n {
            let (c, v) = self.row(r);
            t.extend(c.iter().zip(v).map(|(&c, &v)| (c, r, v)));
        }
        Self::from_triplets(self.n, t).expect("entries already checked")
    }

    /// `self @ x` for node features `x: [n, d]`; rows in parallel, each summed in column
    /// order, so the result does not depend on the thread count.
    pub fn matmul<A: Float>(&self, x: &Array2<A>) -> Result<Array2<A>> {
        let (rows, d) = x.dim();
        if rows != self.n {
            return Err(GraphError::Shape {
                context: "sparse product: node features".into(),
                expected: vec![self.n, d],
                got: vec![rows, d],
            });
        }
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let mut out = vec![A::zero(); self.n * d];
        out.par_chunks_mut(d.max(1)).enumerate().for_each(|(r, o)| {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let v = A::of_f64(v);
                for (o, &xv) in o.iter_mut().zip(&xs[c * d..(c + 1) * d]) {
                    *o = *o + v * xv;
                }
            }
        });
        Ok(Array2::from_shape_vec((self.n, d), out).expect("n x d"))
    }
}

/// The symmetric normalised adjacency of a GCN: `D^-1/2 (A + I) D^-1/2` with degrees
/// counting the self-loop (Kipf & Welling) when `self_loops`, else `D^-1/2 A D^-1/2` with
/// degrees clamped to at least 1 (LightGCN, DiffGraph's encoders; isolated rows are zero).
pub fn normalized_adjacency(g: &Graph, self_loops: bool) -> Csr {
    let extra = usize::from(self_loops);
    let scale: Vec<f64> = (0..g.n())
        .map(|u| 1.0 / ((g.degree(u) + extra).max(1) as f64).sqrt())
        .collect();
    let mut t = Vec::with_capacity(2 * g.m() + g.n());
    for u in 0..g.n() {
        if self_loops {
            t.push((u, u, scale[u] * scale[u]));
        }
        for &v in g.neighbors(u) {
            t.push((u, v, scale[u] * scale[v]));
        }
    }
    Csr::from_triplets(g.n(), t).expect("graph indices are in range")
}

/// `D^-1/2 (sum_k A_k [+ I]) D^-1/2` for several views over the same nodes, with `D` the
/// summed (weighted) degree: the "summed views" input of a single GCN.
pub fn normalized_sum(graphs: &[&Graph], self_loops: bool) -> Result<Csr> {
    let n = graphs.first().map_or(0, |g| g.n());
    if let Some(g) = graphs.iter().find(|g| g.n() != n) {
        return Err(GraphError::Length {
            what: "nodes of a summed view".into(),
            expected: n,
            got: g.n(),
        });
    }
    let mut deg = vec![f64::from(u8::from(self_loops)); n];
    let mut t = Vec::new();
    for g in graphs {
        for u in 0..n {
            deg[u] += g.degree(u) as f64;
            t.extend(g.neighbors(u).iter().map(|&v| (u, v, 1.0)));
        }
    }
    if self_loops {
        t.extend((0..n).map(|u| (u, u, 1.0)));
    }
    let scale: Vec<f64> = deg.iter().map(|&d| 1.0 / d.max(1.0).sqrt()).collect();
    for e in &mut t {
        e.2 *= scale[e.0] * scale[e.1];
    }
    Csr::from_triplets(n, t)
}
