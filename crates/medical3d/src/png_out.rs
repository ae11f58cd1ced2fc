//! PNG pictures of the axial, coronal and sagittal mid-slices, side by side.

use std::io::Write;
use std::path::Path;

use ndarray::{Array2, Array3, ArrayView2, Axis};

use crate::error::{MedicalError, Result, io};
use crate::volume::window;

/// The three mid-slices of `data`, each oriented for display (superior / anterior up):
/// axial `[x, y]` at `z/2`, coronal `[x, z]` at `y/2`, sagittal `[y, z]` at `x/2`, each as
/// `[rows, cols]` with image rows from the top.
pub fn mid_slices(data: &Array3<f32>) -> [Array2<f32>; 3] {
    let [nx, ny, nz] = [data.shape()[0], data.shape()[1], data.shape()[2]];
    let axial = data.index_axis(Axis(2), nz / 2);
    let coronal = data.index_axis(Axis(1), ny / 2);
    let sagittal = data.index_axis(Axis(0), nx / 2);
    // Rows of the picture run along the second axis, reversed (up = +y or +z).
    let orient = |s: ArrayView2<'_, f32>| {
        let mut t = s.t().to_owned();
        t.invert_axis(Axis(0));
        t
    };
    [orient(axial), orient(coronal), orient(sagittal)]
}

/// Writes the three mid-slice panels of `data` windowed to `center +- width / 2`, as one
/// 8-bit greyscale PNG, atomically.
pub fn write_three_plane_png(
    path: impl AsRef<Path>,
    data: &Array3<f32>,
    center: f32,
    width: f32,
) -> Result<()> {
    let path = path.as_ref();
    let panels = mid_slices(&window(data, center, width));
    let gap = 2;
    let height = panels.iter().map(|p| p.nrows()).max().unwrap_or(0);
    let width_px: usize = panels.iter().map(|p| p.ncols()).sum::<usize>() + gap * 2;
    let mut pixels = vec![0u8; height * width_px];
    let mut x0 = 0;
    for p in &panels {
        for r in 0..p.nrows() {
            for c in 0..p.ncols() {
                pixels[r * width_px + x0 + c] = (p[[r, c]] * 255.0).round() as u8;
            }
        }
        x0 += p.ncols() + gap;
    }
    let png_err = |e: png::EncodingError| MedicalError::Png {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width_px as u32, height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(&pixels).map_err(png_err)?;
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io(&dir))?;
    tmp.write_all(&bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| MedicalError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
