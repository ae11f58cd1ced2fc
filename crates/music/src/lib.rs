#![doc = include_str!("../README.md")]

pub mod chorale;
mod error;
pub mod grid;
pub mod metrics;
pub mod midi;
pub mod model;
pub mod sample;
pub mod score;
pub mod task;
pub mod train;
pub mod vocab;

pub use chorale::{Chorale, bundled_path, load_chorales};
pub use error::{MusicError, Result};
pub use grid::Grid;
pub use midi::{read_midi, read_midi_file, write_midi, write_midi_file};
pub use model::{ColumnTransformer, ModelConfig};
pub use sample::{SampleConfig, generate, harmonize};
pub use score::{Note, Score, ScoreMeta, Track};
pub use task::Task;
pub use train::{TrainConfig, train};
pub use vocab::{EMPTY, PAD, Vocab};
