//! The network: a transformer over time columns. Each column's `2 * tracks` tokens are
//! embedded and concatenated with the tracks' condition flags, projected to the model
//! width, given a column position and the diffusion step, and run through pre-norm
//! transformer blocks (`diffusion-nn`'s attention, LayerNorm, Linear, GELU); a final
//! projection gives `K` logits per cell.
//!
//! Positions: `diffusion-nn`'s attention projects queries and keys internally, so rotary
//! embeddings cannot be applied there; columns get a fixed sinusoidal embedding of their
//! index plus learned embeddings of their position in the beat and in a 4/4 bar, which
//! are defined for any length.

use diffusion_core::Rng;
use diffusion_nn::layers::timestep_embedding;
use diffusion_nn::layers::{
    AttentionCache, Gelu, LayerNorm, Linear, LinearCache, MultiheadAttention, NormCache,
};
use diffusion_nn::param::{visit_child, visit_child_mut};
use diffusion_nn::{Float, Param, Parameters};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::error::{MusicError, Result};

/// Sizes of a [`ColumnTransformer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Tokens per cell (`Vocab::size`, the mask included).
    pub vocab: usize,
    pub tracks: usize,
    /// Width of one token's embedding.
    pub token_dim: usize,
    /// Model width.
    pub width: usize,
    pub heads: usize,
    pub depth: usize,
    /// Diffusion steps `T` (the step is embedded as `t / T * 1000`).
    pub steps: usize,
}

/// One pre-norm transformer block.
#[derive(Clone, Debug)]
struct Block<A> {
    norm1: LayerNorm<A>,
    attn: MultiheadAttention<A>,
    norm2: LayerNorm<A>,
    fc1: Linear<A>,
    fc2: Linear<A>,
}

struct BlockCache<A> {
    n1: NormCache<A>,
    attn: AttentionCache<A>,
    n2: NormCache<A>,
    fc1: LinearCache<A>,
    gelu_x: ArrayD<A>,
    fc2: LinearCache<A>,
}

/// The column transformer.
#[derive(Clone, Debug)]
pub struct ColumnTransformer<A> {
    config: ModelConfig,
    embed: Param<A>,
    beat: Param<A>,
    input: Linear<A>,
    time: Linear<A>,
    blocks: Vec<Block<A>>,
    norm: LayerNorm<A>,
    output: Linear<A>,
}

/// What the backward pass needs.
pub struct ModelCache<A> {
    batch: usize,
    len: usize,
    tokens: Vec<u32>,
    columns: Vec<usize>,
    input: LinearCache<A>,
    temb: LinearCache<A>,
    blocks: Vec<BlockCache<A>>,
    norm: NormCache<A>,
    output: LinearCache<A>,
}

impl<A> std::fmt::Debug for ModelCache<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelCache {{ batch: {}, len: {} }}", self.batch, self.len)
    }
}

/// Positions in a beat (4 16ths) and in a 4/4 bar (16): 4 + 16 learned rows.
const BEAT_ROWS: usize = 20;

impl<A: Float> ColumnTransformer<A> {
    /// A freshly initialised network.
    pub fn new(config: ModelConfig, rng: &mut Rng) -> Result<Self> {
        let c = config;
        if c.vocab < 3 || c.tracks == 0 || c.token_dim == 0 || c.width == 0 || c.depth == 0 || c.steps == 0 {
            return Err(MusicError::Unsupported(format!("model config {c:?}")));
        }
        let small = |shape: &[usize], rng: &mut Rng| {
            let n: usize = shape.iter().product();
            let v: Vec<A> = (0..n).map(|_| A::of_f64(0.02 * rng.normal())).collect();
            Param::new(ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape"))
        };
        let blocks = (0..c.depth)
            .map(|_| -> Result<Block<A>> {
                Ok(Block {
                    norm1: LayerNorm::new(c.width, 1e-6, true),
                    attn: MultiheadAttention::new(c.width, c.heads, rng)?,
                    norm2: LayerNorm::new(c.width, 1e-6, true),
                    fc1: Linear::new(c.width, 4 * c.width, true, rng),
                    fc2: Linear::new(4 * c.width, c.width, true, rng),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            embed: small(&[c.vocab, c.token_dim], rng),
            beat: small(&[BEAT_ROWS, c.width], rng),
            input: Linear::new(2 * c.tracks * c.token_dim + c.tracks, c.width, true, rng),
            time: Linear::new(c.width, c.width, true, rng),
            blocks,
            norm: LayerNorm::new(c.width, 1e-6, true),
            output: Linear::new(c.width, 2 * c.tracks * c.vocab, true, rng),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Logits `[batch, len, 2 * tracks, vocab]` (cells in column order: column, then row)
    /// for tokens in the same order, condition flags per column and track
    /// (`[batch, len, tracks]`, 1 where the track's cells are given), steps `t` (per item)
    /// and the absolute index of each item's first column.
    pub fn forward(
        &self,
        tokens: &[u32],
        flags: &[f32],
        t: &[usize],
        first_column: &[usize],
        len: usize,
    ) -> Result<(ArrayD<A>, ModelCache<A>)> {
        let c = self.config;
        let rows = 2 * c.tracks;
        let batch = t.len();
        if tokens.len() != batch * len * rows
            || flags.len() != batch * len * c.tracks
            || first_column.len() != batch
        {
            return Err(MusicError::Unsupported(format!(
                "model input: {} tokens, {} flags, {} offsets for batch {batch}, {len} columns, {rows} rows",
                tokens.len(),
                flags.len(),
                first_column.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= c.vocab) {
            return Err(MusicError::InvalidToken {
                token: bad,
                row: 0,
                column: 0,
                reason: "outside the model's vocabulary",
            });
        }
        // Column features: embeddings of the column's cells, then the condition flags.
        let fin = rows * c.token_dim + c.tracks;
        let mut feat = vec![A::zero(); batch * len * fin];
        for b in 0..batch {
            for l in 0..len {
                let f = &mut feat[(b * len + l) * fin..(b * len + l + 1) * fin];
                for r in 0..rows {
                    let tok = tokens[(b * len + l) * rows + r] as usize;
                    let e = &self.embed.value.as_slice().expect("standard")
                        [tok * c.token_dim..(tok + 1) * c.token_dim];
                    f[r * c.token_dim..(r + 1) * c.token_dim].copy_from_slice(e);
                }
                for k in 0..c.tracks {
                    f[rows * c.token_dim + k] = A::of_f64(flags[(b * len + l) * c.tracks + k] as f64);
                }
            }
        }
        let feat = ArrayD::from_shape_vec(IxDyn(&[batch, len, fin]), feat).expect("shape");
        let (mut h, input) = self.input.forward(&feat)?;
        // Step embedding, per item.
        let ts: Vec<A> = t
            .iter()
            .map(|&s| A::of_f64(s as f64 / c.steps as f64 * 1000.0))
            .collect();
        let (temb, temb_cache) = self.time.forward(&timestep_embedding(&ts, c.width, 10_000.0))?;
        let columns: Vec<usize> = (0..batch)
            .flat_map(|b| (0..len).map(move |l| first_column[b] + l))
            .collect();
        let pos: Vec<A> = timestep_embedding(
            &columns.iter().map(|&x| A::of_f64(x as f64)).collect::<Vec<_>>(),
            c.width,
            10_000.0,
        )
        .into_raw_vec_and_offset()
        .0;
        {
            let hs = h.as_slice_mut().expect("standard");
            let tv = temb.as_slice().expect("standard");
            let bv = self.beat.value.as_slice().expect("standard");
            for (i, row) in hs.chunks_mut(c.width).enumerate() {
                let b = i / len;
                let col = columns[i];
                let (r1, r2) = (col % 4, 4 + col % 16);
                for d in 0..c.width {
                    row[d] = row[d]
                        + tv[b * c.width + d]
                        + pos[i * c.width + d]
                        + bv[r1 * c.width + d]
                        + bv[r2 * c.width + d];
                }
            }
        }
        let mut caches = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let (n1out, n1) = blk.norm1.forward(&h)?;
            let (a, attn) = blk.attn.forward(&n1out, None)?;
            h = h + &a;
            let (n2out, n2) = blk.norm2.forward(&h)?;
            let (u, fc1) = blk.fc1.forward(&n2out)?;
            let (g, gelu_x) = Gelu.forward(&u);
            let (m, fc2) = blk.fc2.forward(&g)?;
            h = h + &m;
            caches.push(BlockCache {
                n1,
                attn,
                n2,
                fc1,
                gelu_x,
                fc2,
            });
        }
        let (hn, norm) = self.norm.forward(&h)?;
        let (y, output) = self.output.forward(&hn)?;
        let y = y
            .into_shape_with_order(IxDyn(&[batch, len, rows, c.vocab]))
            .expect("shape");
        Ok((
            y,
            ModelCache {
                batch,
                len,
                tokens: tokens.to_vec(),
                columns,
                input,
                temb: temb_cache,
                blocks: caches,
                norm,
                output,
            },
        ))
    }

    /// Accumulates parameter gradients from `dy` (the logits' gradient, same shape).
    pub fn backward(&mut self, cache: &ModelCache<A>, dy: &ArrayD<A>) -> Result<()> {
        let c = self.config;
        let rows = 2 * c.tracks;
        let (batch, len) = (cache.batch, cache.len);
        let dy = dy
            .clone()
            .into_shape_with_order(IxDyn(&[batch, len, rows * c.vocab]))
            .map_err(|_| MusicError::Unsupported("logit gradient shape".into()))?;
        let dhn = self.output.backward(&cache.output, &dy)?;
        let mut dh = self.norm.backward(&cache.norm, &dhn)?;
        for (blk, bc) in self.blocks.iter_mut().zip(&cache.blocks).rev() {
            let dg = blk.fc2.backward(&bc.fc2, &dh)?;
            let du = Gelu.backward(&bc.gelu_x, &dg)?;
            let dn2 = blk.fc1.backward(&bc.fc1, &du)?;
            dh = dh + &blk.norm2.backward(&bc.n2, &dn2)?;
            let (dn1, _) = blk.attn.backward(&bc.attn, &dh)?;
            dh = dh + &blk.norm1.backward(&bc.n1, &dn1)?;
        }
        // Step, beat and position embeddings.
        let dhs = dh.as_slice().expect("standard");
        let mut dtemb = vec![A::zero(); batch * c.width];
        {
            let bg = self.beat.grad.as_slice_mut().expect("standard");
            for (i, row) in dhs.chunks(c.width).enumerate() {
                let b = i / len;
                let col = cache.columns[i];
                let (r1, r2) = (col % 4, 4 + col % 16);
                for d in 0..c.width {
                    dtemb[b * c.width + d] = dtemb[b * c.width + d] + row[d];
                    bg[r1 * c.width + d] = bg[r1 * c.width + d] + row[d];
                    bg[r2 * c.width + d] = bg[r2 * c.width + d] + row[d];
                }
            }
        }
        let dtemb = ArrayD::from_shape_vec(IxDyn(&[batch, c.width]), dtemb).expect("shape");
        self.time.backward(&cache.temb, &dtemb)?;
        let dfeat = self.input.backward(&cache.input, &dh)?;
        let fin = rows * c.token_dim + c.tracks;
        let df = dfeat.as_slice().expect("standard");
        let eg = self.embed.grad.as_slice_mut().expect("standard");
        for i in 0..batch * len {
            for r in 0..rows {
                let tok = cache.tokens[i * rows + r] as usize;
                for d in 0..c.token_dim {
                    eg[tok * c.token_dim + d] = eg[tok * c.token_dim + d] + df[i * fin + r * c.token_dim + d];
                }
            }
        }
        Ok(())
    }
}

impl<A> Parameters<A> for ColumnTransformer<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        f("embed", &self.embed);
        f("beat", &self.beat);
        visit_child("input", &self.input, f);
        visit_child("time", &self.time, f);
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            visit_child(&format!("{p}.norm1"), &b.norm1, f);
            visit_child(&format!("{p}.attn"), &b.attn, f);
            visit_child(&format!("{p}.norm2"), &b.norm2, f);
            visit_child(&format!("{p}.fc1"), &b.fc1, f);
            visit_child(&format!("{p}.fc2"), &b.fc2, f);
        }
        visit_child("norm", &self.norm, f);
        visit_child("output", &self.output, f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        f("embed", &mut self.embed);
        f("beat", &mut self.beat);
        visit_child_mut("input", &mut self.input, f);
        visit_child_mut("time", &mut self.time, f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("blocks.{i}");
            visit_child_mut(&format!("{p}.norm1"), &mut b.norm1, f);
            visit_child_mut(&format!("{p}.attn"), &mut b.attn, f);
            visit_child_mut(&format!("{p}.norm2"), &mut b.norm2, f);
            visit_child_mut(&format!("{p}.fc1"), &mut b.fc1, f);
            visit_child_mut(&format!("{p}.fc2"), &mut b.fc2, f);
        }
        visit_child_mut("norm", &mut self.norm, f);
        visit_child_mut("output", &mut self.output, f);
    }
}

impl ColumnTransformer<f32> {
    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed; each
    /// file written atomically).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| MusicError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let json = serde_json::to_vec_pretty(&self.config).expect("plain struct");
        diffusion_train::io::write_atomic(&dir.join("config.json"), &json)?;
        diffusion_train::save_weights(self, dir.join("model.safetensors"))?;
        Ok(())
    }

    /// Loads a model written by [`ColumnTransformer::save`] (strictly: every tensor present
    /// with its shape).
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read(&path).map_err(|source| MusicError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let config: ModelConfig = serde_json::from_slice(&text)
            .map_err(|e| MusicError::Unsupported(format!("{}: {e}", path.display())))?;
        let mut model = Self::new(config, &mut Rng::new(0))?;
        diffusion_train::load_weights(&mut model, dir.join("model.safetensors"), true)?;
        Ok(model)
    }
}
