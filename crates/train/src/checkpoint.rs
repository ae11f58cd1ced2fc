//! Checkpoint directories.
//!
//! ```text
//! <dir>/model.safetensors      weights by dotted name
//! <dir>/optimizer.safetensors  `<name>.exp_avg`, `<name>.exp_avg_sq`; metadata `step`
//! <dir>/ema.safetensors        averaged weights by dotted name (when EMA is on)
//! <dir>/config.json            {"model": <caller's model config>, "train": TrainConfig, "sampler": ...}
//! <dir>/trainer.json           step, RNG (seed, stream, offset), EMA counters
//! ```
//!
//! A save writes a complete sibling temp directory, then renames the old checkpoint to
//! `<dir>.prev`, the new one to `<dir>`, and deletes `<dir>.prev`. A crash at any point
//! leaves either `<dir>` or `<dir>.prev` complete; [`Trainer::resume`] falls back to
//! `<dir>.prev` when `<dir>` is missing.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use diffusion_core::Rng;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::io::{TensorFile, encode, sync_dir, temp_sibling, write_atomic};
use crate::net::Network;
use crate::optim::{AdamW, Ema, Moments};
use crate::sampler::LevelSampler;
use crate::scalar::Scalar;
use crate::trainer::{TrainConfig, Trainer};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const EMA_FILE: &str = "ema.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TRAINER_FILE: &str = "trainer.json";
const FORMAT_VERSION: u32 = 1;

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
            write_atomic(&dir.join(EMA_FILE), &encode(&as_refs(ema.weights()), None)?)?;
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
        let state: TrainerState = read_json(&dir.join(TRAINER_FILE))?;
        if state.format_version != FORMAT_VERSION {
            return Err(TrainError::Corrupt {
                path: dir.join(TRAINER_FILE),
                reason: format!("unsupported format_version {}", state.format_version),
            });
        }
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

/// Reads the caller's model config stored in a checkpoint's `config.json`.
pub fn read_model_config(dir: impl AsRef<Path>) -> Result<serde_json::Value> {
    let dir = checkpoint_dir(dir.as_ref())?;
    let config: CheckpointConfig = read_json(&dir.join(CONFIG_FILE))?;
    Ok(config.model)
}
