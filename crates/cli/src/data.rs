//! Training data: built-in toy distributions, samples of a mixture spec, or a `.npy` file.

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

/// `rings | moons | swiss_roll | checkerboard | gmm:SPEC.json | npy:FILE.npy`.
pub fn load(name: &str, count: usize, seed: u64) -> Result<Data> {
    let mut rng = Rng::with_stream(seed, 3);
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
        format!("unknown dataset {name:?} (rings, moons, swiss_roll, checkerboard, gmm:SPEC, npy:FILE)")
    })?;
    Ok(Data {
        samples: toy.sample(count, &mut rng)?.into_dyn(),
        exact: toy.gmm().transpose()?,
    })
}
