//! NIfTI / npy round trips, bad files, windowing and the three-plane PNG.

use diffusion_medical3d::*;
use ndarray::Array3;

fn sample_volume() -> Volume {
    let data = Array3::from_shape_fn((5, 4, 3), |(i, j, k)| (i * 100 + j * 10 + k) as f32 * 0.5 - 3.25);
    // An oblique affine whose entries are exact in float32 (the header stores float32).
    let affine = [
        [0.0, -1.5, 0.0, 12.5],
        [2.0, 0.0, 0.0, -40.25],
        [0.0, 0.0, 3.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Volume { data, affine }
}

#[test]
fn nifti_round_trips_voxels_and_affine() {
    let dir = tempfile::tempdir().unwrap();
    let v = sample_volume();
    for name in ["a.nii", "b.nii.gz"] {
        let p = dir.path().join(name);
        write_nifti(&p, &v).unwrap();
        let back = read_nifti(&p).unwrap();
        assert_eq!(back, v, "{name}");
        assert_eq!(back.voxel_size(), [2.0, 1.5, 3.0]);
        // Voxel (i, j, k) keeps its index: the file is not transposed.
        assert_eq!(back.data[[4, 0, 2]], v.data[[4, 0, 2]]);
    }
    // Only the target is left in the directory (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let gz = std::fs::read(dir.path().join("b.nii.gz")).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
}

#[test]
fn truncated_and_malformed_nifti_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.nii");
    write_nifti(&p, &sample_volume()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    // Cut inside the voxel data and inside the header.
    for cut in [bytes.len() - 7, 200] {
        let q = dir.path().join(format!("cut{cut}.nii"));
        std::fs::write(&q, &bytes[..cut]).unwrap();
        let e = read_nifti(&q).unwrap_err();
        assert!(matches!(e, MedicalError::Nifti { .. }), "{e}");
    }
    let mut bad = bytes.clone();
    bad[344..348].copy_from_slice(b"xxxx");
    let q = dir.path().join("magic.nii");
    std::fs::write(&q, &bad).unwrap();
    let e = read_nifti(&q).unwrap_err();
    assert!(matches!(e, MedicalError::Nifti { .. }), "{e}");
    // A truncated gzip stream.
    let g = dir.path().join("v.nii.gz");
    write_nifti(&g, &sample_volume()).unwrap();
    let gz = std::fs::read(&g).unwrap();
    let q = dir.path().join("cut.nii.gz");
    std::fs::write(&q, &gz[..gz.len() / 2]).unwrap();
    assert!(matches!(read_nifti(&q).unwrap_err(), MedicalError::Nifti { .. }));
    // Missing file, wrong extension, NaN voxels.
    assert!(matches!(
        read_nifti(dir.path().join("none.nii")).unwrap_err(),
        MedicalError::Io { .. }
    ));
    assert!(matches!(
        write_nifti(dir.path().join("x.img"), &sample_volume()).unwrap_err(),
        MedicalError::Invalid { .. }
    ));
    let mut nan = sample_volume();
    nan.data[[0, 0, 0]] = f32::NAN;
    assert!(matches!(
        write_nifti(dir.path().join("n.nii"), &nan).unwrap_err(),
        MedicalError::NonFinite { .. }
    ));
}

#[test]
fn npy_volumes_of_three_dtypes() {
    let sl = read_npy_volume(data_dir().join("shepp_logan3d_64_f32.npy")).unwrap();
    assert_eq!(sl.shape(), [64, 64, 64]);
    let (lo, hi) = sl
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(lo > -1e-6 && (hi - 1.0).abs() < 1e-6, "{lo} {hi}");
    let mni = read_npy_volume(data_dir().join("mni152_t1_64cube_u8.npy")).unwrap();
    assert_eq!(mni.shape(), [64, 64, 64]);
    assert!(
        mni.data
            .iter()
            .all(|v| v.fract() == 0.0 && (0.0..=255.0).contains(v))
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.npy");
    write_npy_volume(&p, &sample_volume()).unwrap();
    assert_eq!(read_npy_volume(&p).unwrap().data, sample_volume().data);
    let flat = dir.path().join("flat.npy");
    diffusion_testbed::io::write_npy(&flat, &ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[4, 4]))).unwrap();
    assert!(matches!(
        read_npy_volume(&flat).unwrap_err(),
        MedicalError::Shape { .. }
    ));
}

#[test]
fn window_maps_linearly_and_clamps() {
    let d = Array3::from_shape_vec((1, 1, 5), vec![-100.0, 0.0, 40.0, 80.0, 500.0]).unwrap();
    let w = window(&d, 40.0, 80.0);
    assert_eq!(
        w.iter().copied().collect::<Vec<_>>(),
        vec![0.0, 0.0, 0.5, 1.0, 1.0]
    );
    assert_eq!(full_window(&d), (200.0, 600.0));
}

#[test]
fn mid_slices_are_oriented_and_the_png_decodes() {
    // Voxel value encodes its index; check which voxels land where.
    let (nx, ny, nz) = (6, 5, 4);
    let d = Array3::from_shape_fn((nx, ny, nz), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
    let [ax, co, sa] = mid_slices(&d);
    assert_eq!(ax.dim(), (ny, nx));
    assert_eq!(ax[[0, 0]], d[[0, ny - 1, nz / 2]]); // top-left: anterior-most row
    assert_eq!(co.dim(), (nz, nx));
    assert_eq!(co[[0, 3]], d[[3, ny / 2, nz - 1]]); // top: superior
    assert_eq!(sa.dim(), (nz, ny));
    assert_eq!(sa[[nz - 1, 2]], d[[nx / 2, 2, 0]]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("planes.png");
    let (c, w) = full_window(&d);
    write_three_plane_png(&p, &d, c, w).unwrap();
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
    let reader = dec.read_info().unwrap();
    let info = reader.info();
    assert_eq!(
        (info.width as usize, info.height as usize),
        (nx + nx + ny + 4, ny.max(nz))
    );
}
