//! Training data: built-in toy distributions, samples of a mixture spec, procedurally drawn
//! small images, or a `.npy` file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use diffusion_core::Rng;
use diffusion_testbed::{GaussianMixture, GmmSpec, ToyDataset};
use ndarray::ArrayD;

use crate::io::NpyArray;

/// A dataset and, where the distribution is known exactly, that distribution.
#[derive(Debug)]
pub struct Data {
    pub samples: ArrayD<f64>,
    pub exact: Option<GaussianMixture>,
}

/// `rings | moons | swiss_roll | checkerboard | gmm:SPEC.json | shapes[:SIZE] |
/// shapes_rgb[:SIZE] | npy:FILE.npy`.
pub fn load(name: &str, count: usize, seed: u64) -> Result<Data> {
    let mut rng = Rng::with_stream(seed, 3);
    if let Some((channels, size)) = parse_shapes(name)? {
        return Ok(Data {
            samples: crate::shapes::generate(count, channels, size, &mut rng)?,
            exact: None,
        });
    }
    if let Some(spec) = name.strip_prefix("gmm:") {
        let gmm = GaussianMixture::from_spec(&GmmSpec::from_file(spec)?)?;
        let samples = gmm.sample(count, &mut rng).into_dyn();
        return Ok(Data {
            samples,
            exact: Some(gmm),
        });
    }
    if let Some(file) = name.strip_prefix("npy:") {
        let a = NpyArray::read(Path::new(file)).with_context(|| format!("cannot read dataset {file}"))?;
        if a.shape().len() < 2 || a.shape()[0] == 0 {
            bail!(
                "a dataset must be [samples, ...] with at least one sample, got {:?}",
                a.shape()
            );
        }
        return Ok(Data {
            samples: a.to_f64(),
            exact: None,
        });
    }
    let toy = ToyDataset::from_name(name).with_context(|| {
        format!(
            "unknown dataset {name:?} (rings, moons, swiss_roll, checkerboard, gmm:SPEC, shapes[:SIZE], \
             shapes_rgb[:SIZE], npy:FILE)"
        )
    })?;
    Ok(Data {
        samples: toy.sample(count, &mut rng)?.into_dyn(),
        exact: toy.gmm().transpose()?,
    })
}

/// `shapes[:SIZE]` (grey) or `shapes_rgb[:SIZE]` (colour): `(channels, size)`; `None` for
/// other names.
fn parse_shapes(name: &str) -> Result<Option<(usize, usize)>> {
    let (base, size) = match name.split_once(':') {
        Some((b, s)) => (b, Some(s)),
        None => (name, None),
    };
    let channels = match base {
        "shapes" => 1,
        "shapes_rgb" => 3,
        _ => return Ok(None),
    };
    let size = match size {
        None => crate::shapes::DEFAULT_SIZE,
        Some(s) => s
            .parse()
            .with_context(|| format!("{name:?}: the image size after ':' must be a whole number"))?,
    };
    Ok(Some((channels, size)))
}
