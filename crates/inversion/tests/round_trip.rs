//! Invert, then sample: relative RMS reconstruction error of the exactly invertible
//! samplers (BDIA, EDICT) against the data they started from, in f32 and f64, for 10 to
//! 50 steps; plain DDIM inversion measured beside them (it is not exact).

mod common;

use common::{gmm3, vp_grid};
use diffusion_core::{Element, NoiseLevel, Parameterization, Rng, Tensor, denoiser_fn, predict_as};
use diffusion_inversion::{Bdia, BdiaBase, Edict, Grid, grid};
use diffusion_schedules::sigmas::karras_sigmas;
use ndarray::{ArrayD, IxDyn};

/// 64 draws from the mixture (class by class), as an [64, 2] tensor of `A`.
fn data<A: Element>() -> ArrayD<A> {
    let g = gmm3();
    let mut rng = Rng::new(11);
    let mut v = Vec::new();
    for k in 0..3 {
        v.extend(g.sample_class(k, [30, 20, 14][k], &mut rng).unwrap());
    }
    ArrayD::from_shape_vec(IxDyn(&[64, 2]), v.into_iter().map(A::of_f64).collect()).unwrap()
}

/// EDM's Karras grid, sigma 80 -> 0.002, then 0.
fn edm_grid(steps: usize) -> Grid {
    let mut s = karras_sigmas(0.002, 80.0, 7.0, steps);
    s.push(0.0);
    Grid::edm(&s).unwrap()
}

#[derive(Default)]
struct Row {
    ddim: f64,
    bdia: f64,
    bdia_09: f64,
    bdia_edm: f64,
    bdia_edm_09: f64,
    bdia_edm_state: f64,
    bdia_edm_x0: f64,
    edict: f64,
}

fn measure<A: Element>(steps: usize) -> Row
where
    ArrayD<A>: Tensor,
{
    let model = gmm3();
    let x0 = data::<A>();
    let grid = vp_grid(steps);
    let err = |rec: &ArrayD<A>| grid::relative_rms(rec, &x0).unwrap();

    let latent = grid::ddim_invert(&model, &grid, &x0).unwrap();
    let ddim = err(&grid::ddim_sample(&model, &grid, &latent).unwrap());

    let bdia_err = |base: BdiaBase, gamma: f64, grid: &Grid| {
        let b = Bdia::new(base, gamma).unwrap();
        let latent = b.invert(&model, grid, &x0).unwrap();
        err(&b.sample_from(&model, grid, &latent).unwrap().current)
    };
    let bdia = bdia_err(BdiaBase::Ddim, 1.0, &grid);
    let bdia_09 = bdia_err(BdiaBase::Ddim, 0.9, &grid);
    // The epsilon model in f32 at sigma = 80: its `x0 = x - sigma eps` carries ~1e-7 sigma
    // of rounding noise, which cancels only because the sampler's f64 state gives it
    // bit-identical inputs in both directions.
    let bdia_edm = bdia_err(BdiaBase::EdmHeun, 1.0, &edm_grid(steps));
    // The same, measured on the f64 state before it is rounded to `A`.
    let bdia_edm_state = {
        let (b, g) = (Bdia::new(BdiaBase::EdmHeun, 1.0).unwrap(), edm_grid(steps));
        let end = b
            .sample_from(&model, &g, &b.invert(&model, &g, &x0).unwrap())
            .unwrap();
        let exact = end.exact_current().expect("sampled state keeps f64").to_vec();
        let x64 = ArrayD::from_shape_vec(x0.raw_dim(), x0.to_f64_vec()).unwrap();
        grid::relative_rms(&ArrayD::from_shape_vec(x0.raw_dim(), exact).unwrap(), &x64).unwrap()
    };
    let bdia_edm_09 = bdia_err(BdiaBase::EdmHeun, 0.9, &edm_grid(steps));
    // The same mixture as an x0-predicting model evaluated in f64 and rounded to the
    // tensor type: its output is smooth to the tensor's precision.
    let x0_model = denoiser_fn(Parameterization::Sample, |x: &ArrayD<A>, l: NoiseLevel| {
        let x64 = ArrayD::from_shape_vec(x.raw_dim(), x.to_f64_vec()).expect("same shape");
        x.from_f64_like(&predict_as(&model, &x64, l, Parameterization::Sample)?.to_f64_vec())
    });
    let bdia_edm_x0 = {
        let (b, g) = (Bdia::new(BdiaBase::EdmHeun, 1.0).unwrap(), edm_grid(steps));
        let latent = b.invert(&x0_model, &g, &x0).unwrap();
        err(&b.sample_from(&x0_model, &g, &latent).unwrap().current)
    };

    let e = Edict::new(0.93).unwrap();
    let latent = e.invert(&model, &grid, &x0).unwrap();
    let pair = e.sample_from(&model, &grid, &latent).unwrap();
    let edict = err(&pair.x).max(err(&pair.y));
    Row {
        ddim,
        bdia,
        bdia_09,
        bdia_edm,
        bdia_edm_09,
        bdia_edm_state,
        bdia_edm_x0,
        edict,
    }
}

#[test]
fn exact_inversion_round_trips_to_rounding() {
    println!("relative RMS reconstruction error, 64 mixture draws, SD scaled-linear grid uniform in log-SNR");
    println!(
        "{:>5} {:>5} | {:>10} | {:>10} {:>10} {:>10} {:>12} {:>12} {:>12} | {:>10}",
        "type",
        "steps",
        "DDIM",
        "BDIA g=1",
        "BDIA g=.9",
        "BDIA-EDM",
        "BDIA-EDM .9",
        "EDM f64 st.",
        "BDIA-EDM x0",
        "EDICT .93"
    );
    for steps in [10, 20, 30, 50] {
        for (name, r, bound) in [
            ("f32", measure::<f32>(steps), 1e-5),
            ("f64", measure::<f64>(steps), 1e-12),
        ] {
            println!(
                "{name:>5} {steps:>5} | {:>10.2e} | {:>10.2e} {:>10.2e} {:>10.2e} {:>12.2e} {:>12.2e} {:>12.2e} | {:>10.2e}",
                r.ddim,
                r.bdia,
                r.bdia_09,
                r.bdia_edm,
                r.bdia_edm_09,
                r.bdia_edm_state,
                r.bdia_edm_x0,
                r.edict
            );
            for (method, e) in [
                ("BDIA", r.bdia),
                ("BDIA 0.9", r.bdia_09),
                ("BDIA-EDM", r.bdia_edm),
                ("BDIA-EDM 0.9", r.bdia_edm_09),
                ("BDIA-EDM f64 state", r.bdia_edm_state),
                ("BDIA-EDM x0 model", r.bdia_edm_x0),
                ("EDICT", r.edict),
            ] {
                assert!(e <= bound, "{method} {name} {steps} steps: {e:e} > {bound:e}");
            }
            // Plain DDIM inversion is only approximate: its error is far above rounding.
            assert!(r.ddim > 100.0 * bound, "{name} {steps}: DDIM {:e}", r.ddim);
        }
    }
}

/// Sampling from noise and inverting the *final state* recovers the noise exactly too.
#[test]
fn sampling_then_inverting_recovers_the_noise() {
    let model = gmm3();
    let grid = vp_grid(25);
    let noise = common::normal_rows(32, 5);
    let b = Bdia::new(BdiaBase::Ddim, 1.0).unwrap();
    let end = b.sample(&model, &grid, &noise).unwrap();
    let latent = b.invert_state(&model, &grid, &end).unwrap();
    let e = grid::relative_rms(latent.noise(), &noise).unwrap();
    assert!(e < 1e-12, "BDIA {e:e}");

    let ed = Edict::new(0.9).unwrap();
    let pair = ed.sample(&model, &grid, &noise).unwrap();
    let latent = ed.invert_pair(&model, &grid, &pair).unwrap();
    let e = grid::relative_rms(&latent.pair.x, &noise)
        .unwrap()
        .max(grid::relative_rms(&latent.pair.y, &noise).unwrap());
    assert!(e < 1e-12, "EDICT {e:e}");
}
