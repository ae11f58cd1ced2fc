//! Small PNG charts: scatter plots of 2-D samples, error-vs-NFE line charts, image grids.
//!
//! A plotting library with text needs a font stack (system fonts or an embedded TTF);
//! these charts need only axes, tick labels and a legend, so they draw with the 8x8
//! bitmap font of `font8x8` and encode with `png`.

use std::path::Path;

use font8x8::UnicodeFonts;

pub type Rgb = [u8; 3];

/// Distinct colours for series (Tableau 10).
pub const PALETTE: [Rgb; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// An RGB raster.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        let pixels = background
            .iter()
            .copied()
            .cycle()
            .take(width * height * 3)
            .collect();
        Self {
            width,
            height,
            pixels,
        }
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Blends `c` over the pixel with opacity `a` in [0, 1].
    pub fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f64) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            for k in 0..3 {
                let old = f64::from(self.pixels[i + k]);
                self.pixels[i + k] = (old + a * (f64::from(c[k]) - old)).round() as u8;
            }
        }
    }

    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            self.set(
                (x0 + t * (x1 - x0)).round() as i64,
                (y0 + t * (y1 - y0)).round() as i64,
                c,
            );
        }
    }

    pub fn disc(&mut self, (x, y): (f64, f64), radius: f64, c: Rgb, alpha: f64) {
        let r = radius.ceil() as i64;
        for dy in -r..=r {
            for dx in -r..=r {
                if ((dx * dx + dy * dy) as f64) <= radius * radius {
                    self.blend(x.round() as i64 + dx, y.round() as i64 + dy, c, alpha);
                }
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, 8 pixels per character.
    pub fn text(&mut self, x: i64, y: i64, text: &str, c: Rgb) {
        for (k, ch) in text.chars().enumerate() {
            if let Some(glyph) = font8x8::BASIC_FONTS.get(ch) {
                for (row, bits) in glyph.iter().enumerate() {
                    for col in 0..8 {
                        if bits & (1 << col) != 0 {
                            self.set(x + 8 * k as i64 + col, y + row as i64, c);
                        }
                    }
                }
            }
        }
    }

    /// Encodes as PNG, written atomically (temporary file, then rename).
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(std::io::Error::other)?;
            w.write_image_data(&self.pixels).map_err(std::io::Error::other)?;
        }
        crate::io::write_atomic(path, &bytes)
    }
}

/// An axis range, linear or logarithmic.
#[derive(Clone, Copy, Debug)]
pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub log: bool,
}

impl Axis {
    /// A range covering `values` with a small margin.
    pub fn fit(values: impl Iterator<Item = f64>, log: bool) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        if log {
            let (l, h) = (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            );
            Self {
                min: 10f64.powf(l),
                max: 10f64.powf(h),
                log,
            }
        } else {
            let pad = ((hi - lo) * 0.05).max(1e-9);
            Self {
                min: lo - pad,
                max: hi + pad,
                log,
            }
        }
    }

    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (v - self.min) / (self.max - self.min)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.min.log10().round() as i32, self.max.log10().round() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            let span = self.max - self.min;
            let raw = span / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| span / s <= 6.0)
                .unwrap_or(mag * 10.0);
            let first = (self.min / step).ceil() as i64;
            let last = (self.max / step).floor() as i64;
            (first..=last).map(|k| k as f64 * step).collect()
        }
    }
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.0e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A chart: a canvas with a plot area mapped to two axes.
#[derive(Debug)]
pub struct Chart {
    pub canvas: Canvas,
    x: Axis,
    y: Axis,
    area: (f64, f64, f64, f64),
}

const INK: Rgb = [30, 30, 30];
const GRID: Rgb = [225, 225, 225];

impl Chart {
    pub fn new(width: usize, height: usize, title: &str, x: Axis, y: Axis) -> Self {
        let mut canvas = Canvas::new(width, height, [255, 255, 255]);
        let area = (70.0, 30.0, width as f64 - 20.0, height as f64 - 40.0);
        let mut chart = Self {
            canvas: Canvas::new(1, 1, [0; 3]),
            x,
            y,
            area,
        };
        for t in x.ticks() {
            let px = chart.px(t, y.min).0;
            canvas.line((px, area.1), (px, area.3), GRID);
            let s = label(t);
            canvas.text(px as i64 - 4 * s.len() as i64, area.3 as i64 + 8, &s, INK);
        }
        for t in y.ticks() {
            let py = chart.px(x.min, t).1;
            canvas.line((area.0, py), (area.2, py), GRID);
            let s = label(t);
            canvas.text(area.0 as i64 - 6 - 8 * s.len() as i64, py as i64 - 4, &s, INK);
        }
        let (l, t, r, b) = area;
        for (p, q) in [
            ((l, t), (r, t)),
            ((r, t), (r, b)),
            ((r, b), (l, b)),
            ((l, b), (l, t)),
        ] {
            canvas.line(p, q, INK);
        }
        canvas.text(l as i64, 10, title, INK);
        chart.canvas = canvas;
        chart
    }

    /// Pixel position of a data point.
    pub fn px(&self, x: f64, y: f64) -> (f64, f64) {
        let (l, t, r, b) = self.area;
        (l + self.x.unit(x) * (r - l), b - self.y.unit(y) * (b - t))
    }

    pub fn axis_labels(&mut self, x: &str, y: &str) {
        let (l, _, r, b) = self.area;
        let w = self.canvas.width as i64;
        self.canvas
            .text(((l + r) / 2.0) as i64 - 4 * x.len() as i64, b as i64 + 22, x, INK);
        self.canvas.text(w - 8 * y.len() as i64 - 4, 10, y, INK);
    }

    pub fn points(&mut self, pts: &[[f64; 2]], color: Rgb, radius: f64, alpha: f64) {
        for p in pts {
            if p[0].is_finite() && p[1].is_finite() {
                let q = self.px(p[0], p[1]);
                self.canvas.disc(q, radius, color, alpha);
            }
        }
    }

    pub fn polyline(&mut self, pts: &[[f64; 2]], color: Rgb) {
        let visible: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p[0].is_finite() && p[1].is_finite() && (!self.y.log || p[1] > 0.0))
            .map(|p| self.px(p[0], p[1]))
            .collect();
        for w in visible.windows(2) {
            self.canvas.line(w[0], w[1], color);
            self.canvas
                .line((w[0].0, w[0].1 + 1.0), (w[1].0, w[1].1 + 1.0), color);
        }
        for &p in &visible {
            self.canvas.disc(p, 3.0, color, 1.0);
        }
    }

    /// A legend in the plot's top-right corner.
    pub fn legend(&mut self, entries: &[(String, Rgb)]) {
        let (_, t, r, _) = self.area;
        let width = entries.iter().map(|(s, _)| s.len()).max().unwrap_or(0) as f64 * 8.0 + 24.0;
        for (i, (name, c)) in entries.iter().enumerate() {
            let y = t + 8.0 + 12.0 * i as f64;
            let x = r - width - 6.0;
            self.canvas.disc((x + 6.0, y + 4.0), 4.0, *c, 1.0);
            self.canvas.text(x as i64 + 16, y as i64, name, INK);
        }
    }
}

/// A scatter plot of 2-D sample sets (each with a palette index), over the mixture's
/// component means when given.
pub fn scatter_png(
    path: &Path,
    title: &str,
    sets: &[(&ndarray::Array2<f64>, usize)],
    mixture: Option<&diffusion_testbed::GaussianMixture>,
) -> anyhow::Result<()> {
    if sets.iter().any(|(s, _)| s.ncols() != 2) {
        anyhow::bail!("a scatter plot needs 2-D samples");
    }
    let all = || {
        sets.iter()
            .flat_map(|(s, _)| s.rows().into_iter().map(|r| [r[0], r[1]]).collect::<Vec<_>>())
    };
    let x = Axis::fit(all().map(|p| p[0]).filter(|v| v.abs() < 1e3), false);
    let y = Axis::fit(all().map(|p| p[1]).filter(|v| v.abs() < 1e3), false);
    let mut chart = Chart::new(560, 560, title, x, y);
    for (s, color) in sets {
        let pts: Vec<[f64; 2]> = s.rows().into_iter().map(|r| [r[0], r[1]]).collect();
        chart.points(&pts, PALETTE[color % PALETTE.len()], 2.0, 0.5);
    }
    if let Some(m) = mixture {
        let means: Vec<[f64; 2]> = (0..m.n_components())
            .map(|k| [m.mean(k)[0], m.mean(k)[1]])
            .collect();
        for p in means {
            let q = chart.px(p[0], p[1]);
            chart.canvas.line((q.0 - 5.0, q.1), (q.0 + 5.0, q.1), INK);
            chart.canvas.line((q.0, q.1 - 5.0), (q.0, q.1 + 5.0), INK);
        }
    }
    chart.canvas.save_png(path)?;
    Ok(())
}

/// Error against NFE, log-log, one line per solver.
pub fn error_chart_png(path: &Path, title: &str, series: &[(String, Vec<[f64; 2]>)]) -> anyhow::Result<()> {
    let x = Axis::fit(series.iter().flat_map(|(_, p)| p.iter().map(|q| q[0])), true);
    let y = Axis::fit(series.iter().flat_map(|(_, p)| p.iter().map(|q| q[1])), true);
    let mut chart = Chart::new(720, 480, title, x, y);
    chart.axis_labels("NFE", "RMSE");
    let mut legend = Vec::new();
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        chart.polyline(pts, c);
        legend.push((name.clone(), c));
    }
    chart.legend(&legend);
    chart.canvas.save_png(path)?;
    Ok(())
}

/// Pixels between the tiles of an image grid.
const TILE_GAP: usize = 2;

/// Images `[n, channels, height, width]` (1 grey or 3 RGB channels, values in [-1, 1],
/// clamped; NaN shows black) tiled in a near-square grid on white, each pixel drawn as a
/// `zoom` x `zoom` block.
pub fn image_grid(images: &ndarray::ArrayD<f64>, zoom: usize) -> anyhow::Result<Canvas> {
    let &[n, c, h, w] = images.shape() else {
        anyhow::bail!(
            "an image grid needs images [samples, channels, height, width], got {:?}",
            images.shape()
        );
    };
    if c != 1 && c != 3 {
        anyhow::bail!("an image grid needs 1 or 3 channels, got {c}");
    }
    if n == 0 || h == 0 || w == 0 || zoom == 0 {
        anyhow::bail!("an image grid needs at least one non-empty image");
    }
    let cols = (1..=n).find(|k| k * k >= n).unwrap_or(n);
    let rows = n.div_ceil(cols);
    let (tw, th) = (w * zoom + TILE_GAP, h * zoom + TILE_GAP);
    let mut canvas = Canvas::new(cols * tw + TILE_GAP, rows * th + TILE_GAP, [255, 255, 255]);
    // `as u8` saturates and sends NaN to 0.
    let byte = |v: f64| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    for (k, img) in images.outer_iter().enumerate() {
        let (x0, y0) = ((k % cols) * tw + TILE_GAP, (k / cols) * th + TILE_GAP);
        for y in 0..h {
            for x in 0..w {
                let rgb: Rgb = std::array::from_fn(|ch| byte(img[[if c == 1 { 0 } else { ch }, y, x]]));
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        canvas.set((x0 + x * zoom + dx) as i64, (y0 + y * zoom + dy) as i64, rgb);
                    }
                }
            }
        }
    }
    Ok(canvas)
}

/// [`image_grid`] as a PNG (written atomically), zoomed so small images are at least 64
/// pixels high.
pub fn image_grid_png(path: &Path, images: &ndarray::ArrayD<f64>) -> anyhow::Result<()> {
    let height = images.shape().get(2).copied().unwrap_or(1).max(1);
    image_grid(images, (64 / height).max(1))?.save_png(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_ticks_are_decades() {
        let a = Axis::fit([0.003, 0.2].into_iter(), true);
        assert_eq!(a.ticks(), vec![1e-3, 1e-2, 1e-1, 1.0]);
        let l = Axis {
            min: 0.0,
            max: 10.0,
            log: false,
        };
        assert_eq!(l.ticks(), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }

    #[test]
    fn chart_maps_corners_to_the_plot_area() {
        let c = Chart::new(
            400,
            300,
            "t",
            Axis {
                min: 0.0,
                max: 1.0,
                log: false,
            },
            Axis {
                min: 1.0,
                max: 100.0,
                log: true,
            },
        );
        assert_eq!(c.px(0.0, 1.0), (70.0, 260.0));
        assert_eq!(c.px(1.0, 100.0), (380.0, 30.0));
    }

    /// Oracle: pixel (x, y) of image k sits at a hand-computed offset with value
    /// round((v + 1) * 127.5) after clamping.
    #[test]
    fn image_grid_places_and_scales_pixels() {
        // Five 2x3 grey images: a 3x2 grid; image k has pixel (x, y) = v(k, x, y).
        let v = |k: usize, x: usize, y: usize| -1.5 + 0.3 * k as f64 + 0.2 * x as f64 + 0.7 * y as f64;
        let images = ndarray::Array4::from_shape_fn((5, 1, 2, 3), |(k, _, y, x)| v(k, x, y)).into_dyn();
        let zoom = 2;
        let g = image_grid(&images, zoom).unwrap();
        let (tw, th) = (3 * zoom + TILE_GAP, 2 * zoom + TILE_GAP);
        assert_eq!((g.width, g.height), (3 * tw + TILE_GAP, 2 * th + TILE_GAP));
        let at = |x: usize, y: usize| {
            let i = (y * g.width + x) * 3;
            [g.pixels[i], g.pixels[i + 1], g.pixels[i + 2]]
        };
        for k in 0..5 {
            for (x, y) in [(0, 0), (2, 1), (1, 0)] {
                let expected = (((v(k, x, y)).clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                let (px, py) = (
                    (k % 3) * tw + TILE_GAP + x * zoom + 1,
                    (k / 3) * th + TILE_GAP + y * zoom + 1,
                );
                assert_eq!(at(px, py), [expected; 3], "image {k} pixel ({x}, {y})");
            }
        }
        // Clamping: image 0's (0, 0) is -1.5 -> black; image 4's (2, 1) is 0.8 + 0.4 + 0.7 -> white.
        assert_eq!(at(TILE_GAP, TILE_GAP), [0; 3]);
        // The sixth cell is empty (background) and so are the gaps.
        assert_eq!(at(2 * tw + TILE_GAP + 1, th + TILE_GAP + 1), [255; 3]);
        assert_eq!(at(0, 0), [255; 3]);
    }

    #[test]
    fn image_grid_uses_rgb_channels_and_rejects_other_shapes() {
        let mut images = ndarray::Array4::<f64>::zeros((1, 3, 1, 1));
        images[[0, 0, 0, 0]] = 1.0;
        images[[0, 1, 0, 0]] = -1.0;
        images[[0, 2, 0, 0]] = f64::NAN;
        let g = image_grid(&images.into_dyn(), 1).unwrap();
        let i = (TILE_GAP * g.width + TILE_GAP) * 3;
        assert_eq!(&g.pixels[i..i + 3], &[255, 0, 0]);
        assert!(image_grid(&ndarray::Array2::<f64>::zeros((2, 2)).into_dyn(), 1).is_err());
        assert!(image_grid(&ndarray::Array4::<f64>::zeros((1, 2, 4, 4)).into_dyn(), 1).is_err());
    }
}
