//! diffusers' `timestep_spacing` rules, with numpy's arithmetic (round half to even,
//! `linspace` and `arange` formulas) so the integer grids match exactly.

use serde::{Deserialize, Serialize};

use crate::error::{Result, ScheduleError, invalid};

/// How inference timesteps are laid over the training steps (Lin et al. 2023, Table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

impl TimestepSpacing {
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "linspace" => Self::Linspace,
            "leading" => Self::Leading,
            "trailing" => Self::Trailing,
            other => {
                return Err(ScheduleError::UnknownName {
                    kind: "timestep_spacing",
                    name: other.into(),
                    expected: "linspace, leading, trailing",
                });
            }
        })
    }
}

/// `np.linspace(start, stop, num)` (endpoint included, float64).
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// `np.arange(start, stop, step)` for a negative float step.
fn np_arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

/// The checks of the multistep grids: a valid step count and a non-empty range left by
/// `lambda_min_clipped`.
fn check_range(num_train: usize, last_timestep: usize, steps: usize) -> Result<()> {
    check_steps(num_train, steps)?;
    if last_timestep == 0 || last_timestep > num_train {
        return Err(invalid("lambda_min_clipped", "clips away every training step"));
    }
    Ok(())
}

fn check_steps(num_train: usize, steps: usize) -> Result<()> {
    if steps == 0 {
        return Err(invalid("num_inference_steps", "must be at least 1"));
    }
    if steps > num_train {
        return Err(invalid(
            "num_inference_steps",
            format!("{steps} inference steps exceed the {num_train} training steps"),
        ));
    }
    Ok(())
}

/// Integer timesteps, descending, as DDIM / DDPM / PNDM `set_timesteps` computes them.
pub fn ddim_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Result<Vec<i64>> {
    check_steps(num_train, steps)?;
    Ok(match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            np_arange_down(num_train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
    })
}

/// Fractional timesteps, descending, as the Euler / Heun / LMS family computes them.
pub fn euler_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>> {
    check_steps(num_train, steps)?;
    Ok(match spacing {
        // numpy computes in float64 and casts to float32.
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| f64::from(t as f32))
            .collect(),
        TimestepSpacing::Leading | TimestepSpacing::Trailing => {
            ddim_timesteps(spacing, num_train, steps, steps_offset)?
                .into_iter()
                .map(|t| t as f64)
                .collect()
        }
    })
}

/// Integer timesteps, descending, as the multistep solvers (DPM-Solver, UniPC, DEIS)
/// compute them: `n + 1` points with the last dropped. `last_timestep` is the number
/// of training steps left after `lambda_min_clipped` (normally `num_train`).
pub fn multistep_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    last_timestep: usize,
    steps: usize,
    steps_offset: usize,
) -> Result<Vec<i64>> {
    check_range(num_train, last_timestep, steps)?;
    Ok(match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<i64> = np_linspace(0.0, (last_timestep - 1) as f64, steps + 1)
                .into_iter()
                .rev()
                .map(|t| t.round_ties_even() as i64)
                .collect();
            v.pop();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            np_arange_down(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
    })
}

/// The ascending timesteps of diffusers' `DPMSolverMultistepInverseScheduler`: the
/// mirror of [`multistep_timesteps`] that starts at the cleanest level, with
/// `last_timestep - 1` the noisiest step left by `lambda_min_clipped`.
pub fn inverse_multistep_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    last_timestep: usize,
    steps: usize,
    steps_offset: usize,
) -> Result<Vec<i64>> {
    check_range(num_train, last_timestep, steps)?;
    Ok(match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (last_timestep - 1) as f64, steps + 1)[..steps]
            .iter()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (0..steps).map(|i| (i * ratio + steps_offset) as i64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            let mut v: Vec<i64> = np_arange_down(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect();
            v.reverse();
            v
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TimestepSpacing::*;

    // diffusers-scheduler-suite.md, "Schedule vectors".
    #[test]
    fn ddim_grids_match_diffusers() {
        assert_eq!(
            ddim_timesteps(Leading, 1000, 10, 0).unwrap(),
            vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(
            ddim_timesteps(Trailing, 1000, 10, 0).unwrap(),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(
            ddim_timesteps(Linspace, 1000, 10, 0).unwrap(),
            vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
        assert_eq!(
            ddim_timesteps(Leading, 1000, 5, 1).unwrap(),
            vec![801, 601, 401, 201, 1]
        );
    }

    #[test]
    fn euler_grid_matches_diffusers() {
        let t = euler_timesteps(Linspace, 1100, 10, 0).unwrap();
        let want = [
            1099.0, 976.889, 854.778, 732.667, 610.556, 488.444, 366.333, 244.222, 122.111, 0.0,
        ];
        for (a, b) in t.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn multistep_linspace_drops_the_last_point() {
        assert_eq!(
            multistep_timesteps(Linspace, 1000, 1000, 10, 0).unwrap(),
            vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
        );
    }

    #[test]
    fn bad_step_counts_are_errors() {
        assert!(ddim_timesteps(Leading, 1000, 0, 0).is_err());
        assert!(ddim_timesteps(Leading, 1000, 1001, 0).is_err());
        assert!(TimestepSpacing::from_name("uniform").is_err());
    }
}
