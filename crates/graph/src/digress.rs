//! Discrete graph generation by the DiGress recipe (Vignac et al., ICLR 2023) on
//! `diffusion-discrete`'s categorical diffusion:
//!
//! - every node pair `u < v` is a cell with two categories (no edge, edge); the forward
//!   process is the marginal-transition one, `Q_t = a_t I + (1 - a_t) 1 m^T` with `m` the
//!   training graphs' edge density and the cosine schedule ([`Process::marginal`]);
//! - a denoiser predicts the clean edge of every pair from the noisy graph plus
//!   structural features recomputed at every step: degrees, 3- and 4-cycle counts through
//!   each node (matrix powers, as DiGress), the spectrum of the normalised Laplacian
//!   (first non-zero eigenvalues, the number of components, the Fiedler vector), the time
//!   and the graph size. Node features go through a GCN on the noisy graph; each pair's
//!   logit comes from an MLP on `[h_u * h_v, h_u + h_v, A_t(u,v), (A_t^2)(u,v) / n]`.
//!   This is a message-passing stand-in for DiGress's graph transformer (smaller, and
//!   trainable on a CPU in minutes);
//! - training minimises the cross-entropy of the clean edges (DiGress's loss);
//! - sampling draws the size from the training sizes, the edges from `m`, then steps
//!   `x_{t-1} ~ sum_x0 q(x_{t-1} | x_t, x0) p(x0 | x_t)`, the exact posterior of
//!   [`Process::sample_step`].

use diffusion_core::Rng;
use diffusion_discrete::Process;
use diffusion_nn::layers::{Linear, LinearCache, Silu};
use diffusion_nn::param::{Param, Parameters, visit_child, visit_child_mut};
use diffusion_train::{AdamW, AdamWConfig};
use ndarray::{Array2, ArrayD, Ix2};

use crate::error::{GraphError, Result};
use crate::gcn::{Gcn, GcnCache};
use crate::graph::Graph;
use crate::metrics::spectral::laplacian_eigen;
use crate::sparse::normalized_adjacency;

/// Node features per node (see the module docs).
pub const NODE_FEATURES: usize = 12;

/// Model and training sizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DigressConfig {
    pub steps: usize,
    pub hidden: usize,
    pub gcn_layers: usize,
    pub mlp_hidden: usize,
    pub train_steps: usize,
    /// Graphs per optimiser step.
    pub batch: usize,
    pub lr: f64,
}

impl Default for DigressConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            hidden: 32,
            gcn_layers: 3,
            mlp_hidden: 64,
            train_steps: 1500,
            batch: 4,
            lr: 2e-3,
        }
    }
}

/// Pairs `u < v` in row order: the cells of a graph on `n` nodes.
pub fn pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|u| (u + 1..n).map(move |v| (u, v))).collect()
}

/// The graph whose pair cells are `cells` (1 = edge).
pub fn graph_of_cells(n: usize, cells: &[usize]) -> Graph {
    let mut it = cells.iter();
    Graph::from_fn(n, |_, _| *it.next().expect("one cell per pair") == 1)
}

fn cells_of(g: &Graph) -> Vec<usize> {
    pairs(g.n())
        .iter()
        .map(|&(u, v)| usize::from(g.has_edge(u, v)))
        .collect()
}

/// `A^2` of a graph, dense.
fn square(g: &Graph) -> Vec<f64> {
    let n = g.n();
    let mut a2 = vec![0.0; n * n];
    for u in 0..n {
        for &w in g.neighbors(u) {
            for &v in g.neighbors(w) {
                a2[u * n + v] += 1.0;
            }
        }
    }
    a2
}

/// Structural node features of a (noisy) graph at diffusion time `t_frac` in [0, 1]:
/// `[deg/n, c3/n, c4/n^2, |fiedler| sqrt(n), eig_1..eig_4, components/n, t, n/max_n, 1]`,
/// with `c3`, `c4` the 3- and 4-cycles through each node (`(A^3)_ii / 2` and
/// `((A^4)_ii - d^2 - sum_{j~i} (d_j - 1)) / 2`).
pub fn node_features(g: &Graph, t_frac: f64, max_n: usize) -> Array2<f64> {
    let n = g.n();
    let a2 = square(g);
    let nf = n.max(1) as f64;
    let (values, vectors) = laplacian_eigen(g);
    let zero = values.iter().filter(|&&v| v < 1e-8).count();
    let nonzero: Vec<f64> = values.iter().copied().filter(|&v| v >= 1e-8).collect();
    let fiedler = vectors.get(zero.min(n.saturating_sub(1)));
    let mut x = Array2::zeros((n, NODE_FEATURES));
    for u in 0..n {
        let d = g.degree(u) as f64;
        let c3: f64 = g.neighbors(u).iter().map(|&w| a2[w * n + u]).sum::<f64>() / 2.0;
        let a4: f64 = (0..n).map(|k| a2[u * n + k] * a2[u * n + k]).sum();
        let walks: f64 = g.neighbors(u).iter().map(|&j| g.degree(j) as f64 - 1.0).sum();
        let c4 = (a4 - d * d - walks) / 2.0;
        let row = [
            d / nf,
            c3 / nf,
            c4 / (nf * nf),
            fiedler.map_or(0.0, |f| f[u].abs() * nf.sqrt()),
            nonzero.first().copied().unwrap_or(0.0),
            nonzero.get(1).copied().unwrap_or(0.0),
            nonzero.get(2).copied().unwrap_or(0.0),
            nonzero.get(3).copied().unwrap_or(0.0),
            zero as f64 / nf,
            t_frac,
            nf / max_n.max(1) as f64,
            1.0,
        ];
        for (j, v) in row.into_iter().enumerate() {
            x[[u, j]] = v;
        }
    }
    x
}

/// The denoiser: a GCN over structural features, then a pair MLP.
#[derive(Clone, Debug)]
pub struct EdgeDenoiser {
    pub gcn: Gcn<f64>,
    pub fc1: Linear<f64>,
    pub fc2: Linear<f64>,
}

impl Parameters<f64> for EdgeDenoiser {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<f64>)) {
        visit_child("gcn", &self.gcn, f);
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<f64>)) {
        visit_child_mut("gcn", &mut self.gcn, f);
        visit_child_mut("fc1", &mut self.fc1, f);
        visit_child_mut("fc2", &mut self.fc2, f);
    }
}

/// What [`EdgeDenoiser::backward`] needs.
#[derive(Debug)]
pub struct EdgeCache {
    adj: crate::sparse::Csr,
    gcn: GcnCache<f64>,
    h: Array2<f64>,
    c1: LinearCache<f64>,
    pre: ArrayD<f64>,
    c2: LinearCache<f64>,
}

fn to2(x: ArrayD<f64>) -> Array2<f64> {
    x.into_dimensionality::<Ix2>().expect("2-d by construction")
}

impl EdgeDenoiser {
    pub fn new(cfg: &DigressConfig, rng: &mut Rng) -> Result<Self> {
        let mut dims = vec![NODE_FEATURES];
        dims.extend(std::iter::repeat_n(cfg.hidden, cfg.gcn_layers.max(1)));
        let mut gcn = Gcn::kipf(&dims, rng)?;
        // Keep the last layer non-linear too: its output feeds products.
        if let Some(l) = gcn.layers.last_mut() {
            l.activation = crate::gcn::Activation::Tanh;
        }
        Ok(Self {
            gcn,
            fc1: Linear::new(2 * cfg.hidden + 2, cfg.mlp_hidden, true, rng),
            fc2: Linear::new(cfg.mlp_hidden, 1, true, rng),
        })
    }

    /// Edge logits (`log p(edge) - log p(no edge)`) of every pair of the noisy graph `g`.
    pub fn forward(&self, g: &Graph, t_frac: f64, max_n: usize) -> Result<(Vec<f64>, EdgeCache)> {
        let n = g.n();
        let adj = normalized_adjacency(g, true);
        let (h, gc) = self.gcn.forward(&adj, &node_features(g, t_frac, max_n))?;
        let d = h.ncols();
        let a2 = square(g);
        let ps = pairs(n);
        let mut p = Array2::zeros((ps.len(), 2 * d + 2));
        for (i, &(u, v)) in ps.iter().enumerate() {
            for k in 0..d {
                p[[i, k]] = h[[u, k]] * h[[v, k]];
                p[[i, d + k]] = h[[u, k]] + h[[v, k]];
            }
            p[[i, 2 * d]] = f64::from(u8::from(g.has_edge(u, v)));
            p[[i, 2 * d + 1]] = a2[u * n + v] / n as f64;
        }
        let (pre, c1) = self.fc1.forward(&p.into_dyn())?;
        let (act, _) = Silu.forward(&pre);
        let (out, c2) = self.fc2.forward(&act)?;
        Ok((
            out.iter().copied().collect(),
            EdgeCache {
                adj,
                gcn: gc,
                h,
                c1,
                pre,
                c2,
            },
        ))
    }

    /// Accumulates parameter gradients from `d loss / d logits`.
    pub fn backward(&mut self, cache: &EdgeCache, dlogits: &[f64]) -> Result<()> {
        let rows = dlogits.len();
        let dy = ArrayD::from_shape_vec(vec![rows, 1], dlogits.to_vec()).map_err(|e| GraphError::Shape {
            context: format!("edge logits gradient: {e}"),
            expected: vec![rows, 1],
            got: vec![dlogits.len()],
        })?;
        let dact = self.fc2.backward(&cache.c2, &dy)?;
        let dpre = Silu.backward(&cache.pre, &dact)?;
        let dp = to2(self.fc1.backward(&cache.c1, &dpre)?);
        let h = &cache.h;
        let (n, d) = h.dim();
        let mut dh = Array2::zeros((n, d));
        for (i, (u, v)) in pairs(n).into_iter().enumerate() {
            for k in 0..d {
                let (gp, gs) = (dp[[i, k]], dp[[i, d + k]]);
                dh[[u, k]] += gp * h[[v, k]] + gs;
                dh[[v, k]] += gp * h[[u, k]] + gs;
            }
        }
        self.gcn.backward(&cache.adj, &cache.gcn, &dh)?;
        Ok(())
    }
}

/// Mean binary cross-entropy of the logits against the clean cells, and its gradient.
pub fn edge_cross_entropy(logits: &[f64], x0: &[usize]) -> (f64, Vec<f64>) {
    let m = logits.len().max(1) as f64;
    let mut loss = 0.0;
    let grad = logits
        .iter()
        .zip(x0)
        .map(|(&l, &x)| {
            // -log sigmoid(+-l), stably.
            let s = if x == 1 { -l } else { l };
            loss += s.max(0.0) + (-s.abs()).exp().ln_1p();
            let p = 1.0 / (1.0 + (-l).exp());
            (p - x as f64) / m
        })
        .collect();
    (loss / m, grad)
}

/// A trained generator.
#[derive(Clone, Debug)]
pub struct Digress {
    pub process: Process,
    pub model: EdgeDenoiser,
    pub sizes: Vec<usize>,
    pub max_n: usize,
}

/// The training graphs' edge density: `m = [1 - density, density]`.
pub fn edge_marginal(train: &[Graph]) -> Result<Vec<f64>> {
    let pairs: usize = train.iter().map(|g| g.n() * g.n().saturating_sub(1) / 2).sum();
    let edges: usize = train.iter().map(Graph::m).sum();
    if pairs == 0 {
        return Err(GraphError::EmptyGraph {
            context: "training graphs have no node pairs".into(),
        });
    }
    let density = edges as f64 / pairs as f64;
    Ok(vec![1.0 - density, density])
}

/// Trains the edge denoiser; `progress(step, loss)` is called every step.
pub fn train(
    train: &[Graph],
    cfg: &DigressConfig,
    seed: u64,
    mut progress: impl FnMut(usize, f64),
) -> Result<Digress> {
    if train.is_empty() || cfg.batch == 0 || cfg.steps == 0 {
        return Err(GraphError::invalid(
            "DiGress training",
            "need graphs, batch > 0 and steps > 0",
        ));
    }
    for g in train {
        g.require_nodes("training graph")?;
    }
    let process = Process::marginal(edge_marginal(train)?, cfg.steps)?;
    let max_n = train.iter().map(Graph::n).max().unwrap_or(1);
    let mut rng = Rng::new(seed);
    let mut model = EdgeDenoiser::new(cfg, &mut rng)?;
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
        &model,
    )?;
    let mut noise = Rng::with_stream(seed, 3);
    for step in 0..cfg.train_steps {
        model.zero_grad();
        let mut total = 0.0;
        for _ in 0..cfg.batch {
            let g = &train[((noise.uniform() * train.len() as f64) as usize).min(train.len() - 1)];
            let t = 1 + ((noise.uniform() * cfg.steps as f64) as usize).min(cfg.steps - 1);
            let x0 = cells_of(g);
            let xt = process.sample_forward(t, &x0, &mut noise)?;
            let noisy = graph_of_cells(g.n(), &xt);
            let (logits, cache) = model.forward(&noisy, t as f64 / cfg.steps as f64, max_n)?;
            let (loss, mut grad) = edge_cross_entropy(&logits, &x0);
            grad.iter_mut().for_each(|v| *v /= cfg.batch as f64);
            model.backward(&cache, &grad)?;
            total += loss / cfg.batch as f64;
        }
        opt.step(&mut model, cfg.lr)?;
        progress(step, total);
    }
    Ok(Digress {
        process,
        model,
        sizes: train.iter().map(Graph::n).collect(),
        max_n,
    })
}

impl Digress {
    /// Samples `count` graphs (sizes drawn from the training sizes).
    pub fn sample(&self, count: usize, seed: u64) -> Result<Vec<Graph>> {
        let mut rng = Rng::with_stream(seed, 11);
        let steps = self.process.steps();
        let m = self.process.replacement().to_vec();
        (0..count)
            .map(|_| {
                let n = self.sizes
                    [((rng.uniform() * self.sizes.len() as f64) as usize).min(self.sizes.len() - 1)];
                let cells = pairs(n).len();
                let mut xt: Vec<usize> = (0..cells).map(|_| usize::from(rng.uniform() < m[1])).collect();
                for t in (1..=steps).rev() {
                    let g = graph_of_cells(n, &xt);
                    let (logits, _) = self.model.forward(&g, t as f64 / steps as f64, self.max_n)?;
                    let p_x0: Vec<f64> = logits
                        .iter()
                        .flat_map(|&l| {
                            let p = 1.0 / (1.0 + (-l).exp());
                            [1.0 - p, p]
                        })
                        .collect();
                    xt = self.process.sample_step(t, &xt, &p_x0, &mut rng)?;
                }
                Ok(graph_of_cells(n, &xt))
            })
            .collect()
    }
}

/// Erdos-Renyi graphs with the training sizes and edge density (the baseline of the
/// MMD tables).
pub fn erdos_renyi_like(train: &[Graph], count: usize, seed: u64) -> Result<Vec<Graph>> {
    let p = edge_marginal(train)?[1];
    let mut rng = Rng::with_stream(seed, 13);
    Ok((0..count)
        .map(|_| {
            let n = train[((rng.uniform() * train.len() as f64) as usize).min(train.len() - 1)].n();
            Graph::from_fn(n, |_, _| rng.uniform() < p)
        })
        .collect())
}
