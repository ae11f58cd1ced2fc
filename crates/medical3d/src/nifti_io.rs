//! NIfTI-1 volumes (`.nii`, `.nii.gz`) through the `nifti` crate.
//!
//! Reading keeps the affine (sform if set, else qform, else the voxel sizes) and applies
//! the header's intensity scaling. Writing stores float32 voxels, the affine as the sform
//! (NIfTI keeps it in float32) and the voxel sizes in `pixdim`, into a temporary file
//! that is then renamed over the target.

use std::path::Path;

use ndarray::Ix3;
use nifti::writer::WriterOptions;
use nifti::{IntoNdArray, NiftiHeader, NiftiObject, ReaderOptions};

use crate::error::{MedicalError, Result, io, shape};
use crate::volume::Volume;

fn nifti_err(path: &Path, reason: impl ToString) -> MedicalError {
    MedicalError::Nifti {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn extension_ok(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// Reads a 3-D NIfTI volume (a 4-D one with a single time point is accepted).
pub fn read_nifti(path: impl AsRef<Path>) -> Result<Volume> {
    let path = path.as_ref();
    // A missing file is an I/O error, not a format error.
    std::fs::metadata(path).map_err(io(path))?;
    let obj = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| nifti_err(path, describe(&e)))?;
    let header = obj.header().clone();
    let dim = header.dim().map_err(|e| nifti_err(path, e))?.to_vec();
    let dims3 = match dim.as_slice() {
        [x, y, z] | [x, y, z, 1] => [*x as usize, *y as usize, *z as usize],
        _ => {
            return Err(nifti_err(
                path,
                format!("expected a 3-D volume, dims are {dim:?}"),
            ));
        }
    };
    let data = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| nifti_err(path, describe(&e)))?;
    let data = if data.ndim() == 4 {
        data.index_axis_move(ndarray::Axis(3), 0)
    } else {
        data
    };
    let data = data
        .into_dimensionality::<Ix3>()
        .map_err(|_| shape("NIfTI volume", "3-D", &dims3))?;
    let volume = Volume {
        data: data.as_standard_layout().to_owned(),
        affine: affine_of(&header),
    };
    volume.check_finite()?;
    Ok(volume)
}

fn describe(e: &nifti::NiftiError) -> String {
    match e {
        nifti::NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file is truncated".into()
        }
        nifti::NiftiError::InvalidFormat => "not a NIfTI-1 file (bad magic code)".into(),
        other => other.to_string(),
    }
}

/// The voxel-to-world affine a NIfTI reader should use (sform, qform, pixdim in order).
fn affine_of(h: &NiftiHeader) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    a[3][3] = 1.0;
    if h.sform_code > 0 {
        for (r, row) in [h.srow_x, h.srow_y, h.srow_z].iter().enumerate() {
            for c in 0..4 {
                a[r][c] = f64::from(row[c]);
            }
        }
        return a;
    }
    let d = [h.pixdim[1], h.pixdim[2], h.pixdim[3]].map(|v| f64::from(if v > 0.0 { v } else { 1.0 }));
    if h.qform_code > 0 {
        // NIfTI-1 quaternion to rotation (nifti1.h, "method 2").
        let (b, c, dq) = (
            f64::from(h.quatern_b),
            f64::from(h.quatern_c),
            f64::from(h.quatern_d),
        );
        let aq = (1.0 - (b * b + c * c + dq * dq)).max(0.0).sqrt();
        let r = [
            [
                aq * aq + b * b - c * c - dq * dq,
                2.0 * (b * c - aq * dq),
                2.0 * (b * dq + aq * c),
            ],
            [
                2.0 * (b * c + aq * dq),
                aq * aq + c * c - b * b - dq * dq,
                2.0 * (c * dq - aq * b),
            ],
            [
                2.0 * (b * dq - aq * c),
                2.0 * (c * dq + aq * b),
                aq * aq + dq * dq - b * b - c * c,
            ],
        ];
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let scale = [d[0], d[1], d[2] * qfac];
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] = r[i][j] * scale[j];
            }
        }
        a[0][3] = f64::from(h.quatern_x);
        a[1][3] = f64::from(h.quatern_y);
        a[2][3] = f64::from(h.quatern_z);
        return a;
    }
    for i in 0..3 {
        a[i][i] = d[i];
    }
    a
}

/// Writes `volume` as float32 NIfTI-1 (`.nii`, or gzip-compressed `.nii.gz`), atomically.
pub fn write_nifti(path: impl AsRef<Path>, volume: &Volume) -> Result<()> {
    let path = path.as_ref();
    if !extension_ok(path) {
        return Err(crate::error::invalid(
            "NIfTI path",
            format!("{} must end in .nii or .nii.gz", path.display()),
        ));
    }
    volume.check_finite()?;
    let mut h = NiftiHeader::default();
    let vox = volume.voxel_size();
    h.pixdim = [
        1.0,
        vox[0] as f32,
        vox[1] as f32,
        vox[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    h.xyzt_units = 2; // millimetres
    h.sform_code = 1;
    h.qform_code = 0;
    let row = |r: usize| std::array::from_fn::<f32, 4, _>(|c| volume.affine[r][c] as f32);
    h.srow_x = row(0);
    h.srow_y = row(1);
    h.srow_z = row(2);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let suffix = if path.to_string_lossy().ends_with(".gz") {
        ".nii.gz"
    } else {
        ".nii"
    };
    let tmp = tempfile::Builder::new()
        .prefix(".medical3d-")
        .suffix(suffix)
        .tempfile_in(&dir)
        .map_err(io(&dir))?;
    WriterOptions::new(tmp.path())
        .reference_header(&h)
        .write_nifti(&volume.data)
        .map_err(|e| nifti_err(path, e))?;
    std::fs::File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .map_err(io(path))?;
    tmp.persist(path).map_err(|e| MedicalError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
