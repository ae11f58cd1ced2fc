//! Bad input gives typed errors, never panics.

mod common;

use common::{gmm3, normal_rows, vp_grid};
use diffusion_core::{NoiseLevel, Parameterization, denoiser_fn};
use diffusion_inversion::adjoint::adjoint;
use diffusion_inversion::{Bdia, BdiaBase, Edict, Grid, InversionError, grid};
use ndarray::ArrayD;

#[test]
fn gamma_and_p_outside_their_ranges() {
    for g in [0.0, -0.5, 1.5, f64::NAN] {
        assert!(matches!(
            Bdia::new(BdiaBase::Ddim, g),
            Err(InversionError::InvalidParameter { name: "gamma", .. })
        ));
    }
    for p in [0.0, -0.1, 1.01, f64::INFINITY] {
        assert!(matches!(
            Edict::new(p),
            Err(InversionError::InvalidParameter { name: "p", .. })
        ));
    }
}

#[test]
fn sampling_on_another_grid_than_inversion_is_refused() {
    let model = gmm3();
    let x = normal_rows(4, 1);
    let (g20, g21) = (vp_grid(20), vp_grid(21));
    let b = Bdia::new(BdiaBase::Ddim, 1.0).unwrap();
    let latent = b.invert(&model, &g20, &x).unwrap();
    let err = b.sample_from(&model, &g21, &latent).unwrap_err();
    assert!(matches!(err, InversionError::GridMismatch { .. }), "{err}");
    let other = Bdia::new(BdiaBase::Ddim, 0.9).unwrap();
    assert!(matches!(
        other.sample_from(&model, &g20, &latent),
        Err(InversionError::ParameterMismatch { name: "gamma", .. })
    ));
    let e = Edict::new(0.93).unwrap();
    let latent = e.invert(&model, &g20, &x).unwrap();
    assert!(matches!(
        e.sample_from(&model, &g21, &latent),
        Err(InversionError::GridMismatch { .. })
    ));
    assert!(matches!(
        Edict::new(0.9).unwrap().sample_from(&model, &g20, &latent),
        Err(InversionError::ParameterMismatch { name: "p", .. })
    ));
    // BDIA-EDM needs alpha = 1.
    let edm = Bdia::new(BdiaBase::EdmHeun, 1.0).unwrap();
    assert!(matches!(
        edm.invert(&model, &g20, &x),
        Err(InversionError::InvalidGrid(_))
    ));
}

#[test]
fn malformed_grids_are_refused() {
    assert!(matches!(Grid::new(vec![]), Err(InversionError::InvalidGrid(_))));
    let l = |s: f64| NoiseLevel::new(0.0, 1.0, s);
    assert!(Grid::new(vec![l(1.0)]).is_err());
    assert!(Grid::new(vec![l(1.0), l(2.0)]).is_err(), "increasing noise");
    assert!(Grid::new(vec![l(1.0), l(f64::NAN)]).is_err());
    assert!(Grid::new(vec![NoiseLevel::new(0.0, 0.0, 1.0), l(0.5)]).is_err());
    assert!(Grid::edm(&[80.0, 1.0, 0.0]).is_ok());
}

#[test]
fn nan_model_output_is_a_typed_error_with_the_step() {
    let nan_late = denoiser_fn(Parameterization::Epsilon, |x: &ArrayD<f64>, l: NoiseLevel| {
        Ok(x.mapv(|v| if l.sigma < 0.5 { f64::NAN } else { v }))
    });
    let grid = vp_grid(10);
    let x = normal_rows(3, 2);
    let err = grid::ddim_sample(&nan_late, &grid, &x).unwrap_err();
    assert!(
        matches!(err, InversionError::NonFiniteModelOutput { count: 6, .. }),
        "{err}"
    );
    let b = Bdia::new(BdiaBase::Ddim, 1.0).unwrap();
    assert!(matches!(
        b.sample(&nan_late, &grid, &x),
        Err(InversionError::NonFiniteModelOutput { .. })
    ));
    assert!(matches!(
        Edict::new(0.93).unwrap().invert(&nan_late, &grid, &x),
        Err(InversionError::NonFiniteModelOutput { .. })
    ));
}

#[test]
fn shape_and_config_errors() {
    let model = gmm3();
    let grid = vp_grid(5);
    let x = normal_rows(3, 2);
    let wrong = normal_rows(4, 2);
    assert!(matches!(
        adjoint(&model, &grid, &x, &wrong),
        Err(InversionError::Core(_))
    ));
}
