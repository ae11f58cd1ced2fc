//! Preprocessing against scanpy's own numbers (the shipped `lognorm_f32.npy`), closed forms
//! and round trips.

use diffusion_scrna::io::npy::read_matrix;
use diffusion_scrna::io::pbmc::{data_dir, read_pbmc};
use diffusion_scrna::prep::*;
use diffusion_scrna::{CellMatrix, ScrnaError, Values};
use ndarray::{Array2, array};

#[test]
fn lognorm_matches_scanpy() {
    // scanpy stored `raw.X = log1p(counts / n_counts * 1e4)` rounded to 3 decimals; the
    // counts were recovered from it, so our forward pass must land within that rounding
    // (the data README: the round trip reproduces raw.X to < 2e-3).
    let p = read_pbmc(data_dir()).unwrap();
    let oracle = read_matrix(data_dir().join("lognorm_f32.npy")).unwrap();
    let pipe = Pipeline::fit(&p.counts.x, &p.n_counts, 1e4, None, false).unwrap();
    let ours = pipe.forward(&p.counts.x, &p.n_counts).unwrap();
    let worst = ours
        .iter()
        .zip(&oracle)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 2e-3, "max |ours - scanpy| = {worst}");
    // Zeros stay exactly zero.
    assert!(ours.iter().zip(&oracle).all(|(a, b)| (*a == 0.0) == (*b == 0.0)));
}

#[test]
fn normalize_total_and_log1p_closed_forms() {
    let mut x = array![[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]];
    normalize_total(&mut x, 1e4, &[4.0, 0.0, 8.0]).unwrap();
    assert_eq!(x, array![[2500.0, 7500.0], [0.0, 0.0], [2500.0, 2500.0]]);
    log1p(&mut x);
    assert_eq!(x[[0, 0]], 2501f64.ln());
    assert!(matches!(
        normalize_total(&mut x, 1e4, &[1.0]),
        Err(ScrnaError::Length {
            expected: 3,
            got: 1,
            ..
        })
    ));
    assert!(normalize_total(&mut x, 1e4, &[1.0, f64::NAN, 1.0]).is_err());
    assert!(normalize_total(&mut x, 0.0, &[1.0, 1.0, 1.0]).is_err());
}

#[test]
fn filters_keep_what_scanpy_keeps() {
    let x = array![[0.0, 5.0, 1.0], [0.0, 0.0, 1.0], [0.0, 2.0, 3.0]];
    let m = CellMatrix::unnamed(x, Values::Counts).unwrap();
    let (cells, kept) = filter_cells(&m, 3.0, 2);
    assert_eq!(kept, vec![0, 2]);
    assert_eq!(cells.barcodes, vec!["cell_0", "cell_2"]);
    let (genes, kept) = filter_genes(&m, 2, 0.0);
    assert_eq!(kept, vec![1, 2]);
    assert_eq!(genes.genes, vec!["gene_1", "gene_2"]);
    let (_, kept) = filter_genes(&m, 1, 6.0);
    assert_eq!(kept, vec![1]);
}

#[test]
fn seurat_hvg_hand_case() {
    // Values v per gene over two cells, stored as log1p(v):
    //   A: [0, 2] mean 1, var 2 (n-1), disp 2 -> ln 2
    //   B: [1, 4] mean 2.5, var 4.5, disp 1.8 -> ln 1.8
    //   C: [0, 6] mean 3, var 18, disp 6 -> ln 6
    //   D: [1, 1] var 0 -> NaN, never highly variable
    let v = array![[0.0, 1.0, 0.0, 1.0], [2.0, 4.0, 6.0, 1.0]];
    let ln = v.mapv(f64::ln_1p);
    let opts = HvgOptions {
        n_top_genes: Some(2),
        n_bins: 1,
        ..HvgOptions::default()
    };
    let h = highly_variable_genes(&ln, opts).unwrap();
    let d = [2f64.ln(), 1.8f64.ln(), 6f64.ln()];
    let m = d.iter().sum::<f64>() / 3.0;
    let sd = (d.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 2.0).sqrt();
    for g in 0..3 {
        assert!((h.dispersions[g] - d[g]).abs() < 1e-12);
        assert!((h.dispersions_norm[g] - (d[g] - m) / sd).abs() < 1e-12);
    }
    assert!((h.means[2] - 3f64.ln_1p()).abs() < 1e-12);
    assert!(h.dispersions[3].is_nan());
    assert_eq!(h.indices(), vec![0, 2]);
    // With 20 bins over the log means ln 2..ln 4 each of A, B, C sits alone in its bin (D,
    // whose mean ties A's, has no dispersion): scanpy's one-gene rule gives 1. (A lone gene
    // of dispersion exactly 1 would get 0 / 0 = NaN, as in scanpy.)
    let h = highly_variable_genes(&ln, HvgOptions::default()).unwrap();
    for g in 0..3 {
        assert!(
            (h.dispersions_norm[g] - 1.0).abs() < 1e-12,
            "{g}: {}",
            h.dispersions_norm[g]
        );
    }
    // Cut-offs: mean in (0.0125, 3) and normalised dispersion > 0.5: all but D.
    assert_eq!(h.highly_variable, vec![true, true, true, false]);
}

#[test]
fn zscore_closed_form_and_inverse() {
    let x = array![[1.0, 5.0], [3.0, 5.0]];
    let z = ZScore::fit(&x, None);
    // Gene 0: mean 2, unbiased std sqrt(2); gene 1 is constant (std 1 by convention).
    assert_eq!(z.mean, vec![2.0, 5.0]);
    assert!((z.std[0] - 2f64.sqrt()).abs() < 1e-15);
    assert_eq!(z.std[1], 1.0);
    let y = z.apply(&x).unwrap();
    assert!((y[[0, 0]] + 1.0 / 2f64.sqrt()).abs() < 1e-15);
    assert_eq!(z.invert(&y).unwrap(), x);
    let clipped = ZScore {
        clip: Some(0.5),
        ..z.clone()
    }
    .apply(&x)
    .unwrap();
    assert_eq!(clipped[[0, 0]], -0.5);
    assert!(z.apply(&array![[1.0]]).is_err());
}

#[test]
fn pipeline_inverse_round_trips_counts() {
    let p = read_pbmc(data_dir()).unwrap();
    let sub = p.counts.select_cells(&(0..100).collect::<Vec<_>>());
    let sizes = &p.n_counts[..100];
    let hvg = HvgOptions {
        n_top_genes: Some(300),
        ..HvgOptions::default()
    };
    let pipe = Pipeline::fit(&sub.x, sizes, 1e4, Some(hvg), true).unwrap();
    assert_eq!(pipe.genes.len(), 300);
    let y = pipe.forward(&sub.x, sizes).unwrap();
    // z-scored: every kept gene has mean 0 and unbiased variance 1 (or is constant).
    let (m, v) = mean_var(&y);
    assert!(m.iter().all(|m| m.abs() < 1e-10));
    assert!(v.iter().all(|v| (v - 1.0).abs() < 1e-10 || *v == 0.0));
    let back = pipe.inverse_counts(&y, sizes, true).unwrap();
    let kept: Array2<f64> = sub.select_genes(&pipe.genes).x;
    assert_eq!(back, kept, "counts -> model space -> counts is the identity");
    // Generated values below zero expression are clamped to 0, huge ones to the data's maximum.
    let mut wild = y.clone();
    wild[[0, 0]] = -1e3;
    wild[[0, 1]] = 1e6;
    let ln = pipe.inverse_lognorm(&wild).unwrap();
    assert_eq!(ln[[0, 0]], 0.0);
    assert_eq!(ln[[0, 1]], pipe.max_lognorm);
    assert!(pipe.inverse_counts(&y, &sizes[..3], true).is_err());
    // Counts are checked on the way in.
    let mut bad = sub.x.clone();
    bad[[0, 0]] = 0.5;
    assert!(matches!(
        pipe.forward(&bad, sizes),
        Err(ScrnaError::NonIntegerCount { .. })
    ));
}
