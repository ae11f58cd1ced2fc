//! `.h5ad` (feature `h5ad`): round trip, anndata's encoding attributes, sparse `X`, bad files.
#![cfg(feature = "h5ad")]

use diffusion_scrna::io::h5ad::{read_h5ad, write_h5ad};
use diffusion_scrna::io::pbmc::{data_dir, read_pbmc};
use diffusion_scrna::{CellMatrix, ScrnaError, Values};
use hdf5::types::VarLenUnicode;
use hdf5_metno as hdf5;
use ndarray::{Array1, array};

#[test]
fn pbmc_round_trips_identically() {
    let p = read_pbmc(data_dir()).unwrap();
    let m = p.counts.select_cells(&(0..50).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbmc.h5ad");
    write_h5ad(&path, &m, "bulk_labels").unwrap();
    let back = read_h5ad(&path, Values::Counts, Some("bulk_labels")).unwrap();
    assert_eq!(back, m);
    // Without the labels key: the same matrix and names, no labels.
    let bare = read_h5ad(&path, Values::Counts, None).unwrap();
    assert_eq!(
        (bare.x, bare.genes, bare.labels),
        (m.x.clone(), m.genes.clone(), None)
    );
    // anndata's encoding attributes are where anndata looks for them.
    let f = hdf5::File::open(&path).unwrap();
    let attr = |loc: &hdf5::Location, name: &str| -> String {
        loc.attr(name)
            .unwrap()
            .as_reader()
            .read_scalar::<VarLenUnicode>()
            .unwrap()
            .as_str()
            .to_string()
    };
    assert_eq!(attr(&f, "encoding-type"), "anndata");
    assert_eq!(attr(&f.group("obs").unwrap(), "encoding-type"), "dataframe");
    assert_eq!(
        attr(&f.group("obs/bulk_labels").unwrap(), "encoding-type"),
        "categorical"
    );
    assert_eq!(
        attr(&f.dataset("var/_index").unwrap(), "encoding-type"),
        "string-array"
    );
    assert!(matches!(
        read_h5ad(&path, Values::Counts, Some("louvain")),
        Err(ScrnaError::Unknown { .. })
    ));
}

#[test]
fn sparse_x_is_read() {
    // A CSR `X` as anndata writes it: [[0, 2, 0], [1, 0, 3]].
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.h5ad");
    let dense = CellMatrix::unnamed(array![[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]], Values::Counts).unwrap();
    write_h5ad(&path, &dense, "cell_type").unwrap();
    {
        let f = hdf5::File::open_rw(&path).unwrap();
        f.unlink("X").unwrap();
        let g = f.create_group("X").unwrap();
        g.new_attr::<VarLenUnicode>()
            .shape(())
            .create("encoding-type")
            .unwrap()
            .as_writer()
            .write_scalar(&"csr_matrix".parse::<VarLenUnicode>().unwrap())
            .unwrap();
        g.new_attr_builder()
            .with_data(&Array1::from(vec![2i64, 3]))
            .create("shape")
            .unwrap();
        g.new_dataset_builder()
            .with_data(&Array1::from(vec![2f32, 1.0, 3.0]))
            .create("data")
            .unwrap();
        g.new_dataset_builder()
            .with_data(&Array1::from(vec![1i32, 0, 2]))
            .create("indices")
            .unwrap();
        g.new_dataset_builder()
            .with_data(&Array1::from(vec![0i32, 1, 3]))
            .create("indptr")
            .unwrap();
    }
    assert_eq!(read_h5ad(&path, Values::Counts, None).unwrap(), dense);
}

#[test]
fn truncated_and_foreign_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.h5ad");
    let m = CellMatrix::unnamed(array![[1.0, 2.0]], Values::Counts).unwrap();
    write_h5ad(&path, &m, "cell_type").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_h5ad(&path, Values::Counts, None).unwrap_err();
    assert!(matches!(e, ScrnaError::Truncated { .. }), "{e}");
    std::fs::write(&path, b"barcode,A\n").unwrap();
    assert!(matches!(
        read_h5ad(&path, Values::Counts, None),
        Err(ScrnaError::Hdf5 { .. })
    ));
    // Non-integer values where counts are expected.
    let real = CellMatrix::unnamed(array![[0.5]], Values::Real).unwrap();
    write_h5ad(&path, &real, "cell_type").unwrap();
    assert!(matches!(
        read_h5ad(&path, Values::Counts, None),
        Err(ScrnaError::NonIntegerCount { .. })
    ));
}

/// Opens a written file with Python's `anndata` (the interpreter in `SCRNA_PYTHON`, else
/// `python3`; it must have `anndata` installed) and checks shape, names, labels and values.
/// Ignored by default because CI has no anndata; a missing interpreter or package fails it.
#[test]
#[ignore = "needs Python with anndata (SCRNA_PYTHON)"]
fn written_file_loads_in_anndata() {
    let p = read_pbmc(data_dir()).unwrap();
    let m = p.counts.select_cells(&(0..30).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbmc.h5ad");
    write_h5ad(&path, &m, "bulk_labels").unwrap();
    let python = std::env::var("SCRNA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import anndata, numpy as np\n\
         a = anndata.read_h5ad({path:?})\n\
         assert a.shape == (30, 765), a.shape\n\
         assert list(a.var_names[:2]) == {g:?}, list(a.var_names[:2])\n\
         assert a.obs_names[0] == {b:?}\n\
         assert list(a.obs['bulk_labels'].cat.categories) == {cats:?}\n\
         assert a.obs['bulk_labels'].cat.codes.tolist() == {codes:?}\n\
         assert float(np.asarray(a.X).sum()) == {sum:?}\n\
         print('anndata', anndata.__version__, 'ok')",
        path = path.display().to_string(),
        g = &m.genes[..2],
        b = m.barcodes[0],
        cats = m.labels.as_ref().unwrap().names,
        codes = m.labels.as_ref().unwrap().codes,
        sum = m.x.sum(),
    );
    let out = std::process::Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    eprintln!("{text}");
}
