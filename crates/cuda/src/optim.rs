//! AdamW on the device: one fused elementwise kernel per parameter tensor (`kernels/optim.cu`),
//! with `diffusion-train`'s `AdamW::step` arithmetic (f64 per element, its order of
//! operations, rounded once into the f32 parameter and moments).

use cudarc::driver::PushKernelArg;
use diffusion_core::Tensor;

use crate::device::{driver_err, grid_1d};
use crate::error::{CudaError, Result};
use crate::kernels::OPTIM;
use crate::tensor::CudaTensor;

type T32 = CudaTensor<f32>;

/// AdamW's hyperparameters: `diffusion-train`'s (PyTorch's defaults), so a run configures
/// the CPU and the GPU optimizer with one type.
pub use diffusion_train::AdamWConfig;

fn check(name: &'static str, v: f64, ok: bool, range: &str) -> Result<()> {
    if v.is_finite() && ok {
        Ok(())
    } else {
        Err(CudaError::InvalidArgument {
            name,
            reason: format!("must be in {range}, got {v}"),
        })
    }
}

/// `diffusion-train`'s range checks (betas in `[0, 1)`, `eps > 0`, `weight_decay >= 0`) as
/// this crate's error.
fn validate(config: &AdamWConfig) -> Result<()> {
    config.validate().map_err(|e| CudaError::InvalidArgument {
        name: "AdamWConfig",
        reason: e.to_string(),
    })
}

/// The `k`-th (1-based) AdamW update of `param` in place, with its gradient `grad` and the
/// moments `m`, `v` (updated in place), at learning rate `lr`:
///
/// ```text
/// p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
/// p <- p - lr / (1 - b1^k) * m / (sqrt(v) / sqrt(1 - b2^k) + eps)
/// ```
pub fn adamw_step(
    param: &mut T32,
    grad: &T32,
    m: &mut T32,
    v: &mut T32,
    cfg: &AdamWConfig,
    k: u64,
    lr: f64,
) -> Result<()> {
    validate(cfg)?;
    check("learning rate", lr, lr >= 0.0, "[0, inf)")?;
    if k == 0 {
        return Err(CudaError::InvalidArgument {
            name: "k",
            reason: "AdamW steps count from 1 (the bias corrections divide by 1 - beta^k)".into(),
        });
    }
    for t in [grad, &*m, &*v] {
        if t.shape() != param.shape() {
            return Err(CudaError::ShapeMismatch {
                context: "adamw_step: gradient and moments shaped as the parameter",
                expected: param.shape().to_vec(),
                got: t.shape().to_vec(),
            });
        }
        param.check_device(t, "adamw_step")?;
    }
    let n = param.len();
    if n == 0 {
        return Ok(());
    }
    // The scalars exactly as the CPU optimizer computes them, in f64 on the host.
    // Exponents beyond i32 make both corrections exactly 1 in f64 anyway.
    let kexp = k.min(i32::MAX as u64) as i32;
    let bias1 = 1.0 - cfg.beta1.powi(kexp);
    let bias2_sqrt = (1.0 - cfg.beta2.powi(kexp)).sqrt();
    let step_size = lr / bias1;
    let decay = 1.0 - lr * cfg.weight_decay;
    let (c1, c2) = (1.0 - cfg.beta1, 1.0 - cfg.beta2);
    let gpu = param.gpu().clone();
    let f = gpu.function(&OPTIM, "adamw_f32")?;
    let gb = grad.readable()?;
    let n64 = n as u64;
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(param.unique()?)
        .arg(gb.as_ref())
        .arg(m.unique()?)
        .arg(v.unique()?)
        .arg(&n64)
        .arg(&cfg.beta1)
        .arg(&c1)
        .arg(&cfg.beta2)
        .arg(&c2)
        .arg(&bias2_sqrt)
        .arg(&cfg.eps)
        .arg(&step_size)
        .arg(&decay);
    // SAFETY: the four buffers hold n f32 each (shapes checked); param, m and v are owned
    // alone (`unique`), so no other tensor sees the in-place update; the kernel touches
    // indices below n.
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver_err("adamw"))?;
    Ok(())
}

/// The first and second moments of one named parameter.
#[derive(Clone, Debug)]
pub struct GpuMoments {
    pub name: String,
    pub exp_avg: T32,
    pub exp_avg_sq: T32,
}

/// AdamW state on the device for named parameters (e.g. [`crate::models::GpuDit::parameters`]
/// with the gradients of [`crate::models::GpuDitGrads::params`]).
#[derive(Debug)]
pub struct GpuAdamW {
    config: AdamWConfig,
    step: u64,
    moments: Vec<GpuMoments>,
}

impl GpuAdamW {
    /// Zero moments shaped like `params`, step 0.
    pub fn new(config: AdamWConfig, params: &[(String, T32)]) -> Result<Self> {
        validate(&config)?;
        let moments = params
            .iter()
            .map(|(name, p)| GpuMoments {
                name: name.clone(),
                exp_avg: p.zeros_like(),
                exp_avg_sq: p.zeros_like(),
            })
            .collect();
        Ok(Self {
            config,
            step: 0,
            moments,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn moments(&self) -> &[GpuMoments] {
        &self.moments
    }

    /// One update of every parameter with its gradient (same names, order and shapes as at
    /// [`GpuAdamW::new`], checked before anything changes) at learning rate `lr`.
    pub fn step(&mut self, params: &mut [(String, T32)], grads: &[(String, T32)], lr: f64) -> Result<()> {
        check("learning rate", lr, lr >= 0.0, "[0, inf)")?;
        let matches = params.len() == self.moments.len()
            && grads.len() == self.moments.len()
            && self
                .moments
                .iter()
                .zip(params.iter().zip(grads))
                .all(|(m, ((pn, p), (gn, g)))| {
                    *pn == m.name && *gn == m.name && p.shape() == m.exp_avg.shape() && g.shape() == p.shape()
                });
        if !matches {
            let names = |v: &[(String, T32)]| {
                v.iter()
                    .map(|(n, t)| format!("{n} {:?}", t.shape()))
                    .collect::<Vec<_>>()
            };
            return Err(CudaError::InvalidArgument {
                name: "GpuAdamW::step",
                reason: format!(
                    "parameters {:?} and gradients {:?} do not match the optimizer state {:?}",
                    names(params),
                    names(grads),
                    self.moments.iter().map(|m| &m.name).collect::<Vec<_>>()
                ),
            });
        }
        let k = self.step + 1;
        for ((_, p), ((_, g), m)) in params.iter_mut().zip(grads.iter().zip(&mut self.moments)) {
            adamw_step(p, g, &mut m.exp_avg, &mut m.exp_avg_sq, &self.config, k, lr)?;
        }
        self.step = k;
        Ok(())
    }
}
