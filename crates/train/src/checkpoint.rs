//! Checkpoint directories.
//!
//! ```text
//! <dir>/model.safetensors      weights by dotted name
//! <dir>/optimizer.safetensors  `<name>.exp_avg`, `<name>.exp_avg_sq`; metadata `step`
//! <dir>/ema.safetensors        averaged parameters + the model's buffers (when EMA is on)
//! <dir>/config.json            {"model": <caller's model config>, "train": TrainConfig, "sampler": ...}
//! <dir>/trainer.json           step, RNG (seed, stream, offset), EMA counters
//! ```
//!
//! A save writes a complete sibling temp directory, then renames the old checkpoint to
//! `<dir>.prev`, the new one to `<dir>`, and deletes `<dir>.prev`. A crash at any point
//! leaves either `<dir>` or `<dir>.prev` complete; [`Trainer::resume`] falls back to
//! `<dir>.prev` when `<dir>` is missing.
//!
//! `ema.safetensors` is a complete state dict, like `model.safetensors` (same names): the
//! averaged trainable parameters plus the model's non-trainable buffers (e.g. DiT's
//! positional table `pos`, which is not averaged) as they were at the save. It loads strictly
//! into a fresh model with [`load_weights`](crate::load_weights) or [`load_ema_weights`].
//!
//! Format versions (`trainer.json`'s `format_version`): 2 is the layout above. Version 1
//! (older checkpoints) wrote only the averaged parameters to `ema.safetensors`; such
//! checkpoints still resume, and [`load_ema_weights`] takes their buffers from
//! `model.safetensors`, which holds the same buffers. Loading a version-1 EMA file of a model
//! with buffers directly with `load_weights(.., strict)` fails with
//! a missing-tensor error naming the buffer.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use diffusion_core::Rng;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::io::{TensorFile, encode, load_split, sync_dir, temp_sibling, write_atomic};
use crate::net::{Network, Parameters};
use crate::optim::{AdamW, Ema, Moments};
use crate::sampler::LevelSampler;
use crate::scalar::Scalar;
use crate::trainer::{TrainConfig, Trainer};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const EMA_FILE: &str = "ema.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TRAINER_FILE: &str = "trainer.json";
/// The version this code writes (see the module docs).
pub const FORMAT_VERSION: u32 = 2;
/// The last version whose `ema.safetensors` held only the averaged parameters.
const PARAMS_ONLY_EMA_VERSION: u32 = 1;

/// The RNG position, enough to rebuild it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    pub stream: u64,
    pub offset: u64,
}

impl RngState {
    pub fn of(rng: &Rng) -> Self {
        Self {
            seed: rng.seed(),
            stream: rng.stream(),
            offset: rng.offset(),
        }
    }

    /// Rebuilds the generator exactly where it was saved.
    pub fn restore(&self) -> Result<Rng> {
        Ok(Rng::from_parts(self.seed, self.stream, self.offset))
    }
}

/// `trainer.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format_version: u32,
    pub step: u64,
    pub rng: RngState,
    pub optimizer_step: u64,
    pub ema_updates: Option<u64>,
}

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    pub model: serde_json::Value,
    pub train: TrainConfig,
    pub sampler: serde_json::Value,
}

fn prev_path(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| TrainError::invalid("checkpoint path", format!("{} has no name", dir.display())))?;
    Ok(dir.with_file_name(format!("{}.prev", name.to_string_lossy())))
}

/// The directory a checkpoint should be read from: `dir`, or `<dir>.prev` after a crash
/// between the two renames of a save.
pub fn checkpoint_dir(dir: &Path) -> Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let prev = prev_path(dir)?;
    if prev.is_dir() {
        return Ok(prev);
    }
    Err(TrainError::io(
        dir,
        std::io::Error::new(std::io::ErrorKind::NotFound, "no checkpoint directory"),
    ))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| TrainError::invalid("json", e.to_string()))?;
    write_atomic(path, &text)
}

fn as_refs<A>(named: &[(String, ArrayD<A>)]) -> Vec<(String, &ArrayD<A>)> {
    named.iter().map(|(n, a)| (n.clone(), a)).collect()
}

impl<A: Scalar, N: Network<A>> Trainer<A, N> {
    /// Writes a checkpoint to `dir` atomically (see the module docs). `model_config` is
    /// stored verbatim under `"model"` in `config.json`.
    pub fn save(&self, dir: impl AsRef<Path>, model_config: &serde_json::Value) -> Result<()> {
        let dir = dir.as_ref();
        let tmp = temp_sibling(dir)?;
        fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        let written = self.write_files(&tmp, model_config);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        sync_dir(&tmp)?;
        let prev = prev_path(dir)?;
        if dir.exists() {
            if prev.exists() {
                fs::remove_dir_all(&prev).map_err(|e| TrainError::io(&prev, e))?;
            }
            fs::rename(dir, &prev).map_err(|e| TrainError::io(dir, e))?;
        }
        fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
        sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
        if prev.exists() {
            fs::remove_dir_all(&prev).map_err(|e| TrainError::io(&prev, e))?;
        }
        Ok(())
    }

    fn write_files(&self, dir: &Path, model_config: &serde_json::Value) -> Result<()> {
        let weights = crate::io::state_dict(&self.model);
        write_atomic(
            &dir.join(crate::checkpoint::MODEL_FILE),
            &encode(&as_refs(&weights), None)?,
        )?;

        let mut moments = Vec::new();
        for m in self.optimizer.moments() {
            moments.push((format!("{}.exp_avg", m.name), &m.exp_avg));
            moments.push((format!("{}.exp_avg_sq", m.name), &m.exp_avg_sq));
        }
        let meta = HashMap::from([
            ("step".to_string(), self.optimizer.step_count().to_string()),
            ("optimizer".to_string(), "adamw".to_string()),
        ]);
        write_atomic(&dir.join(OPTIMIZER_FILE), &encode(&moments, Some(meta))?)?;

        if let Some(ema) = &self.ema {
            // Buffers are not averaged, but an EMA file without them is not a loadable
            // state dict; they are the model's current ones, as in model.safetensors.
            let mut buffers = Vec::new();
            self.model
                .visit_buffers(&mut |name, b| buffers.push((name.to_string(), b.clone())));
            let mut tensors = as_refs(ema.weights());
            tensors.extend(as_refs(&buffers));
            write_atomic(&dir.join(EMA_FILE), &encode(&tensors, None)?)?;
        }
        write_json(
            &dir.join(CONFIG_FILE),
            &CheckpointConfig {
                model: model_config.clone(),
                train: self.config.clone(),
                sampler: self.sampler.describe(),
            },
        )?;
        write_json(
            &dir.join(TRAINER_FILE),
            &TrainerState {
                format_version: FORMAT_VERSION,
                step: self.step,
                rng: RngState::of(&self.rng),
                optimizer_step: self.optimizer.step_count(),
                ema_updates: self.ema.as_ref().map(|e| e.updates()),
            },
        )
    }

    /// Continues a run saved by [`Trainer::save`]: `model` must have the saved
    /// architecture (its weights are replaced); `sampler` must be the one the run used.
    pub fn resume(dir: impl AsRef<Path>, mut model: N, sampler: LevelSampler) -> Result<Self> {
        let dir = checkpoint_dir(dir.as_ref())?;
        let config: CheckpointConfig = read_json(&dir.join(CONFIG_FILE))?;
        let state = read_state(&dir)?;
        config.train.validate()?;
        TensorFile::open(dir.join(MODEL_FILE))?.load_into(&mut model, true)?;

        let opt_file = TensorFile::open(dir.join(OPTIMIZER_FILE))?;
        let mut moments = Vec::new();
        let mut shapes = Vec::new();
        model.visit(&mut |name, p| shapes.push((name.to_string(), p.value.shape().to_vec())));
        for (name, shape) in &shapes {
            moments.push(Moments {
                name: name.clone(),
                exp_avg: opt_file.get(&format!("{name}.exp_avg"), shape)?,
                exp_avg_sq: opt_file.get(&format!("{name}.exp_avg_sq"), shape)?,
            });
        }
        let optimizer = AdamW::from_state(config.train.optimizer, state.optimizer_step, moments)?;

        let ema = match (config.train.ema, state.ema_updates) {
            (Some(e), Some(updates)) => {
                // Only the averaged parameters are state; the buffers (absent from version-1
                // files) came from model.safetensors above.
                let file = TensorFile::open(dir.join(EMA_FILE))?;
                let shadow = shapes
                    .iter()
                    .map(|(name, shape)| Ok((name.clone(), file.get(name, shape)?)))
                    .collect::<Result<Vec<_>>>()?;
                Some(Ema::from_state(e.decay, e.warmup, updates, shadow)?)
            }
            (None, None) => None,
            _ => {
                return Err(TrainError::Corrupt {
                    path: dir.join(TRAINER_FILE),
                    reason: "EMA settings in config.json and trainer.json disagree".into(),
                });
            }
        };
        Ok(Self {
            model,
            optimizer,
            ema,
            sampler,
            config: config.train,
            rng: state.rng.restore()?,
            step: state.step,
        })
    }
}

/// Reads and version-checks `trainer.json`.
fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(TRAINER_FILE);
    let state: TrainerState = read_json(&path)?;
    if !(PARAMS_ONLY_EMA_VERSION..=FORMAT_VERSION).contains(&state.format_version) {
        return Err(TrainError::Corrupt {
            path,
            reason: format!(
                "unsupported format_version {} (this build reads {PARAMS_ONLY_EMA_VERSION} to {FORMAT_VERSION})",
                state.format_version
            ),
        });
    }
    Ok(state)
}

/// Which weights of a checkpoint [`load_inference_weights`] loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsSource {
    /// The exponential moving average (`ema.safetensors`).
    Ema,
    /// The raw trained weights (`model.safetensors`): the run had no EMA.
    Model,
}

/// Loads the EMA weights of the checkpoint in `dir` (or `<dir>.prev`) into `model`, strictly:
/// averaged parameters and the buffers saved with them. For a version-1 checkpoint, whose EMA
/// file holds only parameters, the buffers come from `model.safetensors` (see the module
/// docs). A run without EMA is a [`TrainError::Io`] error on the missing `ema.safetensors`.
/// Nothing is modified unless every tensor loads.
pub fn load_ema_weights<A: Scalar, M: Parameters<A> + ?Sized>(
    dir: impl AsRef<Path>,
    model: &mut M,
) -> Result<()> {
    let dir = checkpoint_dir(dir.as_ref())?;
    let state = read_state(&dir)?;
    let ema = TensorFile::open(dir.join(EMA_FILE))?;
    if state.format_version == PARAMS_ONLY_EMA_VERSION {
        let raw = TensorFile::open(dir.join(MODEL_FILE))?;
        Ok(load_split(model, &ema, &raw, true)?)
    } else {
        Ok(ema.load_into(model, true)?)
    }
}

/// Loads the weights to sample with from the checkpoint in `dir` (or `<dir>.prev`): the EMA
/// weights when the run kept an average ([`load_ema_weights`]), the raw weights otherwise.
/// Strict: every tensor must match the model.
pub fn load_inference_weights<A: Scalar, M: Parameters<A> + ?Sized>(
    dir: impl AsRef<Path>,
    model: &mut M,
) -> Result<WeightsSource> {
    let dir = checkpoint_dir(dir.as_ref())?;
    // trainer.json, not the presence of the file, says whether the run kept an EMA: a
    // missing ema.safetensors is then an error rather than a silent fall back to raw weights.
    if read_state(&dir)?.ema_updates.is_some() {
        load_ema_weights(&dir, model)?;
        Ok(WeightsSource::Ema)
    } else {
        TensorFile::open(dir.join(MODEL_FILE))?.load_into(model, true)?;
        Ok(WeightsSource::Model)
    }
}

/// Reads the caller's model config stored in a checkpoint's `config.json`.
pub fn read_model_config(dir: impl AsRef<Path>) -> Result<serde_json::Value> {
    let dir = checkpoint_dir(dir.as_ref())?;
    let config: CheckpointConfig = read_json(&dir.join(CONFIG_FILE))?;
    Ok(config.model)
}
