//! Readers and writers: round trips, the shipped PBMC set, and typed errors for bad input.

use std::path::Path;

use diffusion_scrna::io::mtx::{read_10x, read_mtx, write_10x};
use diffusion_scrna::io::npy::{read_cells, read_matrix, write_matrix};
use diffusion_scrna::io::pbmc::{data_dir, read_pbmc};
use diffusion_scrna::io::text::{read_delimited, write_delimited};
use diffusion_scrna::io::{read_names, write_names};
use diffusion_scrna::{CellMatrix, Labels, ScrnaError, Values};
use ndarray::{Array2, array};

fn small() -> CellMatrix {
    let x = array![[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]];
    CellMatrix::new(
        x,
        vec!["CD3E".into(), "MS4A1".into(), "LYZ".into()],
        vec!["AAAC-1".into(), "TTTG-1".into()],
        Values::Counts,
    )
    .unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn pbmc_set_reads_with_labels_and_sizes() {
    let p = read_pbmc(data_dir()).unwrap();
    assert_eq!(p.counts.x.dim(), (700, 765));
    assert_eq!(p.counts.genes.len(), 765);
    let labels = p.counts.labels.as_ref().unwrap();
    assert_eq!(labels.num_types(), 10);
    // The README's type counts: Dendritic 240 ... Naive T 8.
    let mut counts = vec![0; 10];
    labels.codes.iter().for_each(|&c| counts[c] += 1);
    counts.sort_unstable();
    assert_eq!(counts, vec![8, 13, 19, 31, 43, 54, 68, 95, 129, 240]);
    // 67.4% zeros, max 259 (the data README).
    let zeros = p.counts.x.iter().filter(|&&v| v == 0.0).count() as f64 / p.counts.x.len() as f64;
    assert!((zeros - 0.674).abs() < 5e-4, "{zeros}");
    assert_eq!(p.counts.x.iter().copied().fold(0.0, f64::max), 259.0);
    // Library sizes cover all genes of the original matrix: never below the subset's sums.
    assert!(
        p.counts
            .library_sizes()
            .iter()
            .zip(&p.n_counts)
            .all(|(s, n)| s <= n)
    );
}

#[test]
fn delimited_round_trip_csv_and_tsv() {
    let dir = tempfile::tempdir().unwrap();
    let m = small();
    for name in ["c.csv", "c.tsv"] {
        let path = dir.path().join(name);
        write_delimited(&path, &m, None).unwrap();
        let back = read_delimited(&path, None, Values::Counts).unwrap();
        assert_eq!(back, m, "{name}");
    }
    let text = std::fs::read_to_string(dir.path().join("c.tsv")).unwrap();
    assert!(
        text.starts_with("barcode\tCD3E\tMS4A1\tLYZ\nAAAC-1\t0\t3\t1\n"),
        "{text}"
    );
    // Real values survive exactly (shortest round-trip decimal).
    let r = CellMatrix::unnamed(array![[0.1, 1.0 / 3.0]], Values::Real).unwrap();
    let path = dir.path().join("r.csv");
    write_delimited(&path, &r, None).unwrap();
    assert_eq!(read_delimited(&path, None, Values::Real).unwrap(), r);
}

#[test]
fn tenx_directory_round_trip_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let m = small();
    write_10x(dir.path(), &m).unwrap();
    assert_eq!(read_10x(dir.path(), Values::Counts).unwrap(), m);
    let mtx = std::fs::read_to_string(dir.path().join("matrix.mtx")).unwrap();
    // genes x cells, 1-based, non-zeros only.
    assert!(
        mtx.starts_with("%%MatrixMarket matrix coordinate integer general\n3 2 3\n2 1 3\n3 1 1\n1 2 5\n"),
        "{mtx}"
    );
    // Cell Ranger 3 gzips all three files.
    let gz = tempfile::tempdir().unwrap();
    for f in ["matrix.mtx", "features.tsv", "barcodes.tsv"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        std::fs::write(gz.path().join(format!("{f}.gz")), enc.finish().unwrap()).unwrap();
    }
    assert_eq!(read_10x(gz.path(), Values::Counts).unwrap(), m);
    // A truncated gzip stream is reported as truncated.
    let bytes = std::fs::read(gz.path().join("matrix.mtx.gz")).unwrap();
    std::fs::write(gz.path().join("matrix.mtx.gz"), &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        read_10x(gz.path(), Values::Counts),
        Err(ScrnaError::Truncated { .. })
    ));
}

#[test]
fn mtx_details() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.mtx");
    // Comments, duplicate entries summed, `array` format column-major.
    write(
        &p,
        "%%MatrixMarket matrix coordinate real general\n% c\n2 2 3\n1 1 1.5\n1 1 1\n2 2 4\n",
    );
    assert_eq!(read_mtx(&p).unwrap(), array![[2.5, 0.0], [0.0, 4.0]]);
    write(&p, "%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n");
    assert_eq!(read_mtx(&p).unwrap(), array![[1.0, 3.0], [2.0, 4.0]]);
    // Truncated: fewer entries than declared.
    write(
        &p,
        "%%MatrixMarket matrix coordinate integer general\n2 2 3\n1 1 1\n",
    );
    let e = read_mtx(&p).unwrap_err();
    assert!(matches!(e, ScrnaError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("1 of the 3 entries"), "{e}");
    // Index out of range, bad banner, symmetric.
    write(
        &p,
        "%%MatrixMarket matrix coordinate integer general\n2 2 1\n3 1 1\n",
    );
    assert!(matches!(read_mtx(&p), Err(ScrnaError::Parse { line: 3, .. })));
    write(&p, "hello\n");
    assert!(matches!(read_mtx(&p), Err(ScrnaError::Parse { line: 1, .. })));
    write(&p, "%%MatrixMarket matrix coordinate real symmetric\n1 1 0\n");
    assert!(matches!(read_mtx(&p), Err(ScrnaError::Parse { .. })));
}

#[test]
fn npy_round_trip_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let x = array![[1.0, 2.0], [3.0, 4.5]];
    write_matrix(&p, &x).unwrap();
    assert_eq!(read_matrix(&p).unwrap(), x);
    assert!(matches!(
        read_cells(&p, Values::Counts),
        Err(ScrnaError::NonIntegerCount { cell: 1, gene: 1, .. })
    ));
    // The shipped uint16 counts read as f64.
    let c = read_matrix(data_dir().join("counts_u16.npy")).unwrap();
    assert_eq!(c.dim(), (700, 765));
    // Truncated data.
    let bytes = std::fs::read(data_dir().join("counts_u16.npy")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = read_matrix(&p).unwrap_err();
    assert!(matches!(e, ScrnaError::Truncated { .. }), "{e}");
}

#[test]
fn bad_values_and_names_are_typed_errors() {
    let names = |n: usize, p: &str| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let e = CellMatrix::new(array![[1.0, -2.0]], names(2, "g"), names(1, "c"), Values::Counts).unwrap_err();
    assert!(
        matches!(e, ScrnaError::NegativeCount { cell: 0, gene: 1, value } if value == -2.0),
        "{e}"
    );
    let e = CellMatrix::new(array![[1.5, 2.0]], names(2, "g"), names(1, "c"), Values::Counts).unwrap_err();
    assert!(matches!(e, ScrnaError::NonIntegerCount { gene: 0, .. }));
    let e = CellMatrix::new(
        array![[f64::NAN, 2.0]],
        names(2, "g"),
        names(1, "c"),
        Values::Real,
    )
    .unwrap_err();
    assert!(matches!(e, ScrnaError::NonFinite { .. }), "{e}");
    // Real values may be negative or fractional.
    assert!(CellMatrix::new(array![[-1.5, 2.0]], names(2, "g"), names(1, "c"), Values::Real).is_ok());
    let e = CellMatrix::new(array![[1.0, 2.0]], names(3, "g"), names(1, "c"), Values::Counts).unwrap_err();
    assert!(
        matches!(
            e,
            ScrnaError::Length {
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = CellMatrix::new(array![[1.0, 2.0]], names(2, "g"), names(2, "c"), Values::Counts).unwrap_err();
    assert!(matches!(
        e,
        ScrnaError::Length {
            expected: 1,
            got: 2,
            ..
        }
    ));
    let e = small()
        .with_labels(Labels::new(vec![0, 1, 0], vec!["a".into(), "b".into()]).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            e,
            ScrnaError::Length {
                what: "cell-type labels",
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(Labels::new(vec![0, 2], vec!["a".into(), "b".into()]).is_err());
    assert!(matches!(
        small().gene_indices(&["NOPE"]),
        Err(ScrnaError::Unknown { .. })
    ));
}

#[test]
fn bad_text_files_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.csv");
    write(&p, "barcode,A,B\nc1,1,2\nc2,3\n");
    let e = read_delimited(&p, None, Values::Counts).unwrap_err();
    assert!(
        matches!(e, ScrnaError::Parse { line: 3, .. }) && e.to_string().contains("truncated"),
        "{e}"
    );
    write(&p, "barcode,A,B\nc1,1,x\n");
    assert!(matches!(
        read_delimited(&p, None, Values::Counts),
        Err(ScrnaError::Parse { line: 2, .. })
    ));
    write(&p, "barcode,A,B\nc1,1,-1\n");
    assert!(matches!(
        read_delimited(&p, None, Values::Counts),
        Err(ScrnaError::NegativeCount { .. })
    ));
    write(&p, "barcode,A,B\nc1,1,nan\n");
    assert!(matches!(
        read_delimited(&p, None, Values::Real),
        Err(ScrnaError::NonFinite { .. })
    ));
    // A 10x directory whose gene list is one short.
    let d = tempfile::tempdir().unwrap();
    write_10x(d.path(), &small()).unwrap();
    write_names(d.path().join("features.tsv"), &["A\tA", "B\tB"]).unwrap();
    let e = read_10x(d.path(), Values::Counts).unwrap_err();
    assert!(
        matches!(
            e,
            ScrnaError::Length {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        read_names(d.path().join("barcodes.tsv")).unwrap(),
        small().barcodes
    );
    let missing = read_10x(dir.path().join("nowhere"), Values::Counts).unwrap_err();
    assert!(matches!(missing, ScrnaError::Io { .. }));
    let _ = Array2::<f64>::zeros((0, 0));
}
