//! `shapes`: procedurally drawn small images for training image models on a CPU.
//!
//! Each image is one filled shape (disc, square, horizontal or vertical bar) on a black
//! background, at a random position and size, in [-1, 1]. Grey images have the shape at +1;
//! colour images give it one of the seven non-black corners of the RGB cube. Everything is
//! drawn from the given [`Rng`], so a seed fixes the dataset.

use anyhow::{Result, bail};
use diffusion_core::Rng;
use ndarray::{ArrayD, IxDyn};

pub const DEFAULT_SIZE: usize = 16;

/// Smallest and largest accepted side length (a shape needs a few pixels; the dataset lives
/// in memory).
const SIZES: std::ops::RangeInclusive<usize> = 4..=256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Disc,
    Square,
    HorizontalBar,
    VerticalBar,
}

/// `count` images `[count, channels, size, size]`; `channels` is 1 (grey) or 3 (RGB).
pub fn generate(count: usize, channels: usize, size: usize, rng: &mut Rng) -> Result<ArrayD<f64>> {
    if channels != 1 && channels != 3 {
        bail!("shapes images have 1 or 3 channels, not {channels}");
    }
    if !SIZES.contains(&size) {
        bail!(
            "shapes image size must be {} to {}, got {size}",
            SIZES.start(),
            SIZES.end()
        );
    }
    if count == 0 {
        bail!("the dataset needs at least one image (--num-data)");
    }
    let plane = size * size;
    let mut data = vec![-1.0; count * channels * plane];
    for image in data.chunks_exact_mut(channels * plane) {
        let shape = [
            Shape::Disc,
            Shape::Square,
            Shape::HorizontalBar,
            Shape::VerticalBar,
        ][pick(rng, 4)];
        // Half-extent between 1/8 and 1/4 of the side, centre so the shape stays inside.
        let s = size as f64;
        let r = s * (0.125 + 0.125 * rng.uniform());
        let cx = r + (s - 2.0 * r) * rng.uniform();
        let cy = r + (s - 2.0 * r) * rng.uniform();
        let colour: Vec<f64> = if channels == 1 {
            vec![1.0]
        } else {
            // Bit k of 1..=7 switches channel k on.
            let bits = 1 + pick(rng, 7);
            (0..3)
                .map(|k| if bits & (1 << k) != 0 { 1.0 } else { -1.0 })
                .collect()
        };
        for y in 0..size {
            for x in 0..size {
                // Pixel centres sit at half-integer coordinates.
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                if covers(shape, r, dx, dy) {
                    for (c, &v) in colour.iter().enumerate() {
                        image[c * plane + y * size + x] = v;
                    }
                }
            }
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&[count, channels, size, size]), data).expect("sizes agree"))
}

/// Uniform index in `0..n`.
fn pick(rng: &mut Rng, n: usize) -> usize {
    ((rng.uniform() * n as f64) as usize).min(n - 1)
}

/// Whether the point at offset `(dx, dy)` from the centre lies in the shape of half-extent `r`.
fn covers(shape: Shape, r: f64, dx: f64, dy: f64) -> bool {
    // Bars are a third as thick as long, but at least one pixel, so they never vanish.
    let thin = (r / 3.0).max(0.5);
    match shape {
        Shape::Disc => dx * dx + dy * dy <= r * r,
        Shape::Square => dx.abs() <= r && dy.abs() <= r,
        Shape::HorizontalBar => dx.abs() <= r && dy.abs() <= thin,
        Shape::VerticalBar => dx.abs() <= thin && dy.abs() <= r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_binary_in_range_and_seeded() {
        let a = generate(64, 3, 16, &mut Rng::new(5)).unwrap();
        let b = generate(64, 3, 16, &mut Rng::new(5)).unwrap();
        let c = generate(64, 3, 16, &mut Rng::new(6)).unwrap();
        assert_eq!(a.shape(), &[64, 3, 16, 16]);
        assert_eq!(a, b, "the same seed draws the same images");
        assert_ne!(a, c, "another seed draws other images");
        assert!(a.iter().all(|&v| v == -1.0 || v == 1.0));
    }

    /// Every image has a shape whose area matches the drawn size: at least a bar of
    /// (2 * size/8) x 1 pixels, at most a square of (2 * size/4 + 1)^2 pixels.
    #[test]
    fn every_image_has_one_shape_of_the_drawn_size() {
        let size = 16;
        let a = generate(200, 1, size, &mut Rng::new(1)).unwrap();
        let (min_area, max_area) = (2 * size / 8, (2 * size / 4 + 1).pow(2));
        let mut areas = Vec::new();
        for img in a.outer_iter() {
            let on = img.iter().filter(|&&v| v > 0.0).count();
            assert!((min_area..=max_area).contains(&on), "area {on}");
            areas.push(on);
            // One shape, not a filled frame: background remains.
            assert!(img.iter().any(|&v| v < 0.0));
        }
        areas.sort_unstable();
        assert!(areas[0] < areas[areas.len() - 1], "sizes vary");
    }

    /// Hand-computed points inside and outside each shape.
    #[test]
    fn shape_membership_matches_geometry() {
        assert!(covers(Shape::Disc, 2.0, 1.2, 1.2));
        assert!(!covers(Shape::Disc, 2.0, 1.5, 1.5));
        assert!(covers(Shape::Square, 2.0, 1.9, -1.9));
        assert!(covers(Shape::HorizontalBar, 3.0, 2.9, 0.9));
        assert!(!covers(Shape::HorizontalBar, 3.0, 0.0, 1.1));
        assert!(!covers(Shape::VerticalBar, 3.0, 1.1, 0.0));
        // A bar of half-extent below 1.5 is still one pixel thick.
        assert!(covers(Shape::VerticalBar, 1.0, 0.5, 0.0));
    }

    #[test]
    fn bad_sizes_are_errors() {
        let rng = &mut Rng::new(0);
        assert!(generate(4, 2, 16, rng).is_err());
        assert!(generate(4, 1, 2, rng).is_err());
        assert!(generate(0, 1, 16, rng).is_err());
    }
}
