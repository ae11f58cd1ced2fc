//! RePaint (Lugmayr et al. 2022): inpainting with an unconditional epsilon model, as
//! diffusers' `RePaintScheduler`. Each reverse step is a DDIM step (`eta` = 1 is DDPM) for
//! the unknown region, while the known region is the real image forward-noised to the
//! same level; the resampling schedule jumps back up `jump_length` steps
//! `jump_n_sample - 1` times at every `jump_length`-th step, re-noising the sample with
//! [`RePaint::undo_step`] so the two regions harmonise.
//!
//! Masks follow diffusers: `1` marks the known pixels (kept), `0` the pixels to generate.

use diffusion_core::{
    Denoiser, Noise, NoiseLevel, Parameterization, Rng, Tensor, predict_as, tensor::check_same_shape,
};
use diffusion_schedules::{DiscreteSchedule, DiscreteScheduleConfig, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Table, clip, table_index};
use crate::config;
use crate::error::{Result, SolverError, invalid};
use crate::sample::Control;
use crate::scheduler::{Scheduler, need_rng};

/// The solver keys of `RePaintScheduler` (its schedule keys are `num_train_timesteps`,
/// `beta_start`, `beta_end`, `beta_schedule` and `trained_betas`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RePaintConfig {
    /// DDIM's eta in `[0, 1]`: 0 is deterministic DDIM for the unknown region, 1 is DDPM.
    pub eta: f64,
    /// Clamp the predicted x0 to `[-1, 1]`.
    pub clip_sample: bool,
}

impl Default for RePaintConfig {
    fn default() -> Self {
        Self {
            eta: 0.0,
            clip_sample: true,
        }
    }
}

/// diffusers' `get_schedule_jump` loop (`RePaintScheduler.set_timesteps` before scaling):
/// the inference-step indices in the order they are visited. A rise from one entry to the
/// next is an [`RePaint::undo_step`], a fall a [`RePaint::step_inpaint`].
pub fn schedule_jump(num_inference_steps: usize, jump_length: usize, jump_n_sample: usize) -> Vec<usize> {
    let n = num_inference_steps;
    let mut jumps = vec![0usize; n];
    if jump_length > 0 {
        // range(0, n - jump_length, jump_length)
        let mut j = 0;
        while j + jump_length < n {
            jumps[j] = jump_n_sample.saturating_sub(1);
            j += jump_length;
        }
    }
    let mut out = Vec::new();
    let mut t = n;
    while t >= 1 {
        t -= 1;
        out.push(t);
        if jumps[t] > 0 {
            jumps[t] -= 1;
            for _ in 0..jump_length {
                t += 1;
                out.push(t);
            }
        }
    }
    out
}

/// diffusers' `RePaintScheduler`.
#[derive(Clone, Debug)]
pub struct RePaint {
    config: RePaintConfig,
    table: Table,
    betas: Vec<f32>,
    timesteps: Vec<f64>,
    /// `num_train_timesteps // num_inference_steps` once `set_timesteps` ran.
    step_ratio: Option<usize>,
    /// The timestep the sample is at (the one the next `step` must use); `None` before the
    /// first step.
    at: Option<i64>,
}

impl RePaint {
    const NAME: &'static str = "repaint";

    pub fn new(schedule: DiscreteScheduleConfig, config: RePaintConfig) -> Result<Self> {
        config::check_range(Self::NAME, "eta", config.eta, 0.0, 1.0)?;
        let betas = DiscreteSchedule::from_config(&schedule)?.betas;
        Ok(Self {
            table: Table::new(&schedule, false)?,
            betas,
            config,
            timesteps: Vec::new(),
            step_ratio: None,
            at: None,
        })
    }

    /// The class defaults: linear betas 1e-4 to 0.02 over 1000 steps.
    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Leading)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn config(&self) -> &RePaintConfig {
        &self.config
    }

    /// diffusers' `set_timesteps(num_inference_steps, jump_length, jump_n_sample)`: the
    /// [`schedule_jump`] indices times `num_train_timesteps // num_inference_steps`
    /// (`num_inference_steps` is capped at `num_train_timesteps`).
    pub fn set_timesteps_jump(
        &mut self,
        num_inference_steps: usize,
        jump_length: usize,
        jump_n_sample: usize,
    ) -> Result<()> {
        let train = self.table.len();
        let n = num_inference_steps.min(train);
        if n == 0 {
            return Err(invalid(Self::NAME, "num_inference_steps", "must be at least 1"));
        }
        if jump_n_sample == 0 {
            return Err(invalid(Self::NAME, "jump_n_sample", "must be at least 1"));
        }
        let ratio = train / n;
        self.timesteps = schedule_jump(n, jump_length, jump_n_sample)
            .into_iter()
            .map(|i| (i * ratio) as f64)
            .collect();
        self.step_ratio = Some(ratio);
        self.at = None;
        Ok(())
    }

    fn ratio(&self, what: &'static str) -> Result<usize> {
        self.step_ratio.ok_or(SolverError::NotInitialized {
            scheduler: Self::NAME,
            what,
        })
    }

    fn abar(&self, t: i64) -> f64 {
        if t >= 0 { self.table.abar(t as usize) } else { 1.0 }
    }

    /// Checks that `t` is the timestep the sample is at; returns `(t, t - ratio)`.
    fn check_step(&self, t: f64) -> Result<(i64, i64)> {
        let ratio = self.ratio("step")? as i64;
        let ti = table_index(Self::NAME, t, self.table.len())? as i64;
        if let Some(at) = self.at
            && at != ti
        {
            return Err(SolverError::OutOfOrder {
                scheduler: Self::NAME,
                expected: at as f64,
                got: t,
            });
        }
        Ok((ti, ti - ratio))
    }

    /// `std_dev_t = eta * sqrt(variance)` with diffusers' `_get_variance`.
    fn std_dev(&self, t: i64, prev: i64) -> f64 {
        let (a_t, a_prev) = (self.abar(t), self.abar(prev));
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        self.config.eta * variance.sqrt()
    }

    /// The DDIM update of the unknown region, with `z` the step's noise.
    fn unknown_part<T: Tensor>(&self, m: &T, t: i64, prev: i64, x: &T, z: Option<&T>) -> Result<T> {
        let (a_t, a_prev) = (self.abar(t), self.abar(prev));
        let std = self.std_dev(t, prev);
        let (sa_t, sb_t, sa_prev) = (a_t.sqrt(), (1.0 - a_t).sqrt(), a_prev.sqrt());
        let dir = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let noise = match z {
            Some(z) if t > 0 && self.config.eta > 0.0 => Some((std, z)),
            _ => None,
        };
        let mut terms: Vec<(f64, &T)> = Vec::with_capacity(3);
        let out = if self.config.clip_sample {
            let mut x0 = m.zeros_like();
            x0.lincomb(0.0, &[(1.0 / sa_t, x), (-sb_t / sa_t, m)], None)?;
            let x0 = clip(&x0, 1.0)?;
            terms.push((dir, m));
            if let Some((s, z)) = noise {
                terms.push((s, z));
            }
            x0.lincomb_to_new(sa_prev, &terms, None)?
        } else {
            // x0 folded into the coefficients: one pass.
            terms.push((sa_prev / sa_t, x));
            terms.push((dir - sa_prev * sb_t / sa_t, m));
            if let Some((s, z)) = noise {
                terms.push((s, z));
            }
            let mut out = x.zeros_like();
            out.lincomb(0.0, &terms, None)?;
            out
        };
        Ok(out)
    }

    /// diffusers' `step(model_output, t, sample, original_image, mask)`: the unknown region
    /// (`mask` = 0) takes the DDIM/DDPM update, the known region (`mask` = 1) the original
    /// image noised to the previous timestep, `sqrt(abar_prev) x_known + sqrt(1 - abar_prev) z`
    /// (one `z` serves both, as in diffusers). Fractional masks blend linearly.
    pub fn step_inpaint<T: Tensor>(
        &mut self,
        model_output: &T,
        t: f64,
        sample: &T,
        known: &T,
        mask: &T,
        rng: &mut Rng,
    ) -> Result<T> {
        let (ti, prev) = self.check_step(t)?;
        check_same_shape("repaint model output", sample.shape(), model_output.shape())?;
        check_same_shape("repaint known image", sample.shape(), known.shape())?;
        check_same_shape("repaint mask", sample.shape(), mask.shape())?;
        let m = mask.to_f64_vec();
        if let Some(v) = m.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(SolverError::InvalidSchedule {
                scheduler: Self::NAME,
                reason: format!("mask value {v} is outside [0, 1]"),
            });
        }
        let mut z = sample.zeros_like();
        z.lincomb(0.0, &[], Some(Noise::new(1.0, rng)))?;
        let unknown = self.unknown_part(model_output, ti, prev, sample, Some(&z))?;
        let a_prev = self.abar(prev);
        let known_part =
            diffusion_core::lincomb_new(&[(a_prev.sqrt(), known), ((1.0 - a_prev).sqrt(), &z)], None)?;
        let (k, u) = (known_part.to_f64_vec(), unknown.to_f64_vec());
        let mixed: Vec<f64> = m
            .iter()
            .zip(k.iter().zip(&u))
            .map(|(&w, (&k, &u))| w * k + (1.0 - w) * u)
            .collect();
        self.at = Some(prev);
        Ok(sample.from_f64_like(&mixed)?)
    }

    /// diffusers' `undo_step(sample, t)`: re-noises the sample one inference step up,
    /// `x <- sqrt(1 - beta_s) x + sqrt(beta_s) z` for `s = t .. t + ratio - 1` (diffusers'
    /// indexing: `t` is the timestep of the step just taken).
    pub fn undo_step<T: Tensor>(&mut self, sample: &T, t: f64, rng: &mut Rng) -> Result<T> {
        let ratio = self.ratio("undo_step")?;
        let ti = table_index(Self::NAME, t, self.table.len())?;
        if ti + ratio > self.betas.len() {
            return Err(SolverError::TimestepNotInSchedule {
                scheduler: Self::NAME,
                timestep: t,
            });
        }
        if let Some(at) = self.at
            && at != ti as i64 - ratio as i64
        {
            return Err(SolverError::OutOfOrder {
                scheduler: Self::NAME,
                expected: (at + ratio as i64) as f64,
                got: t,
            });
        }
        let mut x = sample.clone();
        for s in ti..ti + ratio {
            let beta = f64::from(self.betas[s]);
            x.lincomb((1.0 - beta).sqrt(), &[], Some(Noise::new(beta.sqrt(), rng)))?;
        }
        self.at = Some(ti as i64);
        Ok(x)
    }
}

impl<T: Tensor> Scheduler<T> for RePaint {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// diffusers' defaults `jump_length = 10`, `jump_n_sample = 10`.
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.set_timesteps_jump(n, 10, 10)
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn prediction_type(&self) -> Parameterization {
        Parameterization::Epsilon
    }

    fn is_stochastic(&self) -> bool {
        true
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let a = self.table.abar(table_index(Self::NAME, t, self.table.len())?);
        Ok(NoiseLevel::new(t, a.sqrt(), (1.0 - a).sqrt()))
    }

    /// The update without a known region (mask all zero). The generic [`crate::sample()`]
    /// loop cannot follow the jumps of the resampling schedule (a rise is an
    /// [`RePaint::undo_step`], which this refuses as out of order); use [`inpaint`], or
    /// `set_timesteps_jump(n, _, 1)` for a schedule without jumps.
    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, rng: Option<&mut Rng>) -> Result<()> {
        let (ti, prev) = self.check_step(t)?;
        let z = if self.config.eta > 0.0 && ti > 0 {
            let rng = need_rng(Self::NAME, rng)?;
            let mut z = x.zeros_like();
            z.lincomb(0.0, &[], Some(Noise::new(1.0, rng)))?;
            Some(z)
        } else {
            None
        };
        *x = self.unknown_part(m, ti, prev, x, z.as_ref())?;
        self.at = Some(prev);
        Ok(())
    }

    /// The DDPM forward process (diffusers' RePaint raises here and points to DDPM's).
    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        let a = self.table.abar(table_index(Self::NAME, t, self.table.len())?);
        Ok(diffusion_core::lincomb_new(
            &[(a.sqrt(), x0), ((1.0 - a).sqrt(), noise)],
            None,
        )?)
    }
}

/// diffusers' `RePaintPipeline` loop: from the noise `x_t`, walk the scheduler's jump
/// schedule, calling the model and [`RePaint::step_inpaint`] on each fall and
/// [`RePaint::undo_step`] on each rise. `mask` = 1 keeps `known`. `callback(i, total)`
/// sees each schedule entry and may stop the loop.
pub fn inpaint<T, M, F>(
    scheduler: &mut RePaint,
    model: &M,
    x_t: &T,
    known: &T,
    mask: &T,
    rng: &mut Rng,
    mut callback: F,
) -> Result<T>
where
    T: Tensor,
    M: Denoiser<T> + ?Sized,
    F: FnMut(usize, usize) -> Control,
{
    let timesteps = scheduler.timesteps.clone();
    let Some(&first) = timesteps.first() else {
        return Err(SolverError::NotInitialized {
            scheduler: RePaint::NAME,
            what: "inpaint",
        });
    };
    scheduler.at = None;
    let mut x = x_t.clone();
    let mut t_last = first + 1.0;
    for (i, &t) in timesteps.iter().enumerate() {
        if t < t_last {
            let level = <RePaint as Scheduler<T>>::noise_level(scheduler, t)?;
            let eps = predict_as(model, &x, level, Parameterization::Epsilon)?;
            x = scheduler.step_inpaint(&eps, t, &x, known, mask, rng)?;
        } else {
            x = scheduler.undo_step(&x, t_last, rng)?;
        }
        t_last = t;
        if callback(i, timesteps.len()) == Control::Stop {
            break;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffusion_core::denoiser_fn;
    use ndarray::{ArrayD, IxDyn};

    fn table() -> Vec<f64> {
        // Independent of the scheduler: the schedules crate's own float32 table.
        DiscreteSchedule::from_config(&RePaint::schedule_defaults())
            .unwrap()
            .alphas_cumprod
            .iter()
            .map(|&a| f64::from(a))
            .collect()
    }

    fn arr(v: Vec<f64>) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).unwrap()
    }

    fn eta(eta: f64, clip_sample: bool) -> RePaint {
        RePaint::new(RePaint::schedule_defaults(), RePaintConfig { eta, clip_sample }).unwrap()
    }

    #[test]
    fn jump_schedule_matches_a_hand_worked_case() {
        // get_schedule_jump(6, jump_length=2, jump_n_sample=2): jumps = {0: 1, 2: 1};
        // down 5..2, jump at 2 (up 3, 4), down 3..0, jump at 0 (up 1, 2), down 1, 0.
        assert_eq!(
            schedule_jump(6, 2, 2),
            vec![5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0]
        );
        // n <= jump_length: range(0, n - jump_length, jump_length) is empty.
        assert_eq!(schedule_jump(3, 10, 10), vec![2, 1, 0]);
        // jump_n_sample = 1: every jump counter starts at 0.
        assert_eq!(schedule_jump(5, 2, 1), vec![4, 3, 2, 1, 0]);
        // The paper's setting: 250 steps, 24 jump points (0, 10, ..., 230), each visited
        // 9 extra times up and down 10 steps.
        assert_eq!(schedule_jump(250, 10, 10).len(), 250 + 24 * 9 * 20);

        let mut s = eta(0.0, true);
        s.set_timesteps_jump(6, 2, 2).unwrap();
        let expect: Vec<f64> = [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0]
            .iter()
            .map(|&i| (i * 166) as f64)
            .collect();
        assert_eq!(Scheduler::<ArrayD<f64>>::timesteps(&s), &expect[..]);
        // set_timesteps uses diffusers' defaults (10, 10) and caps n at the table length.
        Scheduler::<ArrayD<f64>>::set_timesteps(&mut s, 5000).unwrap();
        assert_eq!(Scheduler::<ArrayD<f64>>::timesteps(&s).len(), 1000 + 99 * 9 * 20);
    }

    #[test]
    fn eta_zero_step_is_exact_on_a_consistent_sample() {
        // x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps with the true eps: DDIM lands on
        // sqrt(a_prev) x0 + sqrt(1 - a_prev) eps (closed form), in the unknown region.
        let a = table();
        let mut s = eta(0.0, true);
        s.set_timesteps_jump(10, 10, 1).unwrap();
        let (t, prev) = (900usize, 800usize);
        let x0 = arr(vec![0.5, -0.25, 0.9, -1.0]);
        let eps = arr(vec![1.2, -0.7, 0.1, 2.0]);
        let xt = &x0 * a[t].sqrt() + &eps * (1.0 - a[t]).sqrt();
        let want = &x0 * a[prev].sqrt() + &eps * (1.0 - a[prev]).sqrt();
        let mut x = xt.clone();
        s.step_in_place(&eps, t as f64, &mut x, None).unwrap();
        for (g, w) in x.iter().zip(want.iter()) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        // With a mask: the known entries are the known image noised to `prev` with the
        // step's z (drawn again from a clone of the generator), the rest as above.
        let mut s = eta(0.0, true);
        s.set_timesteps_jump(10, 10, 1).unwrap();
        let known = arr(vec![0.3, 0.3, -0.6, 0.0]);
        let mask = arr(vec![1.0, 0.0, 1.0, 0.0]);
        let mut rng = Rng::new(7);
        let mut z = vec![0.0; 4];
        rng.clone().fill_normal(&mut z);
        let out = s
            .step_inpaint(&eps, t as f64, &xt, &known, &mask, &mut rng)
            .unwrap();
        for i in 0..4 {
            let w = if mask[i] == 1.0 {
                a[prev].sqrt() * known[i] + (1.0 - a[prev]).sqrt() * z[i]
            } else {
                want[i]
            };
            assert!((out[i] - w).abs() < 1e-12, "{i}: {} vs {w}", out[i]);
        }
    }

    #[test]
    fn eta_one_is_the_ddpm_posterior_and_the_last_step_keeps_the_known_image() {
        let a = table();
        let mut s = eta(1.0, false);
        s.set_timesteps_jump(10, 10, 1).unwrap();
        let (t, prev) = (500usize, 400usize);
        let x = arr(vec![0.4, -2.5, 1.5]);
        let m = arr(vec![0.3, 0.2, -1.1]);
        let zero = arr(vec![0.0; 3]);
        let mut rng = Rng::new(3);
        let mut z = vec![0.0; 3];
        rng.clone().fill_normal(&mut z);
        let out = s.step_inpaint(&m, t as f64, &x, &zero, &zero, &mut rng).unwrap();
        // DDPM posterior (Ho et al. eq. 7) with x0 from the eps prediction.
        let beta = 1.0 - a[t] / a[prev];
        for i in 0..3 {
            let x0 = (x[i] - (1.0 - a[t]).sqrt() * m[i]) / a[t].sqrt();
            let mean = a[prev].sqrt() * beta / (1.0 - a[t]) * x0
                + (a[t] / a[prev]).sqrt() * (1.0 - a[prev]) / (1.0 - a[t]) * x[i];
            let std = ((1.0 - a[prev]) / (1.0 - a[t]) * beta).sqrt();
            let w = mean + std * z[i];
            assert!((out[i] - w).abs() < 1e-11, "{i}: {} vs {w}", out[i]);
        }
        // t = 0 steps to abar = 1: the known region is the known image exactly.
        let mut s = eta(1.0, true);
        s.set_timesteps_jump(10, 10, 1).unwrap();
        let known = arr(vec![0.25, -0.5, 0.75]);
        let one = arr(vec![1.0; 3]);
        let out = s.step_inpaint(&m, 0.0, &x, &known, &one, &mut rng).unwrap();
        assert_eq!(out, known);
    }

    #[test]
    fn undo_step_noises_by_the_product_of_the_betas() {
        let betas = DiscreteSchedule::from_config(&RePaint::schedule_defaults())
            .unwrap()
            .betas;
        let mut s = eta(0.0, true);
        s.set_timesteps_jump(10, 10, 1).unwrap();
        // From a constant sample: mean sqrt(prod(1 - beta)) c, variance 1 - prod(1 - beta).
        let n = 200_000;
        let x = ArrayD::from_elem(IxDyn(&[n]), 2.0);
        let mut rng = Rng::new(11);
        let out = s.undo_step(&x, 300.0, &mut rng).unwrap();
        let keep: f64 = betas[300..400].iter().map(|&b| 1.0 - f64::from(b)).product();
        let mean = out.iter().sum::<f64>() / n as f64;
        let var = out.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 2.0 * keep.sqrt()).abs() < 4.0 * ((1.0 - keep) / n as f64).sqrt());
        assert!((var / (1.0 - keep) - 1.0).abs() < 0.02, "{var} vs {}", 1.0 - keep);
    }

    #[test]
    fn steps_must_follow_the_jump_schedule() {
        let mut s = eta(0.0, true);
        let x = arr(vec![0.1, 0.2]);
        let mut rng = Rng::new(1);
        assert!(matches!(
            s.undo_step(&x, 0.0, &mut rng),
            Err(SolverError::NotInitialized { .. })
        ));
        s.set_timesteps_jump(6, 2, 2).unwrap();
        s.step_in_place(&x, 830.0, &mut x.clone(), None).unwrap();
        // The sample is now at 664: stepping elsewhere or undoing the wrong step fails.
        let mut y = x.clone();
        assert!(matches!(
            s.step_in_place(&x, 830.0, &mut y, None),
            Err(SolverError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.undo_step(&x, 498.0, &mut rng),
            Err(SolverError::OutOfOrder { .. })
        ));
        let bad_mask = arr(vec![0.5, 1.5]);
        assert!(s.step_inpaint(&x, 664.0, &x, &x, &bad_mask, &mut rng).is_err());
        let short = arr(vec![0.5]);
        assert!(s.step_inpaint(&x, 664.0, &x, &x, &short, &mut rng).is_err());
    }

    #[test]
    fn inpaint_keeps_the_known_region_and_follows_the_schedule() {
        // An exact epsilon model for data concentrated at 0.5: every known entry ends at
        // the known image exactly; unknown entries at the data point.
        let model = denoiser_fn(Parameterization::Epsilon, |x: &ArrayD<f64>, l: NoiseLevel| {
            Ok(x.mapv(|v| (v - l.alpha * 0.5) / l.sigma))
        });
        let mut s = eta(1.0, true);
        s.set_timesteps_jump(20, 5, 3).unwrap();
        let known = arr(vec![-0.8, 0.1, 0.9, -0.3]);
        let mask = arr(vec![1.0, 0.0, 1.0, 0.0]);
        let mut rng = Rng::new(5);
        let mut xt = arr(vec![0.0; 4]);
        xt.lincomb(0.0, &[], Some(Noise::new(1.0, &mut rng))).unwrap();
        let mut visited = 0;
        let out = inpaint(&mut s, &model, &xt, &known, &mask, &mut rng, |_, _| {
            visited += 1;
            Control::Continue
        })
        .unwrap();
        assert_eq!(visited, schedule_jump(20, 5, 3).len());
        assert_eq!(out[0], known[0]);
        assert_eq!(out[2], known[2]);
        assert!(
            (out[1] - 0.5).abs() < 1e-9 && (out[3] - 0.5).abs() < 1e-9,
            "{out}"
        );
    }

    #[test]
    fn registry_builds_it_by_class_name_with_its_keys() {
        let s = crate::by_name::<ArrayD<f32>>(
            "RePaintScheduler",
            &serde_json::json!({"eta": 0.5, "clip_sample": false}),
        )
        .unwrap();
        assert_eq!(s.name(), "repaint");
        assert!(crate::by_name::<ArrayD<f32>>("repaint", &serde_json::json!({"eta": 2.0})).is_err());
        assert!(crate::by_name::<ArrayD<f32>>("repaint", &serde_json::json!({"etaa": 0.0})).is_err());
        // Another class's key is ignored, as diffusers' from_config does.
        assert!(crate::by_name::<ArrayD<f32>>("repaint", &serde_json::json!({"solver_order": 2})).is_ok());
    }
}
