//! Classifier-free guidance on the class-conditional GMM (class k = component k) and
//! the guidance rescale against hand-computed numbers.

use diffusion_core::{ConditionalDenoiser, Denoiser, NoiseLevel, Parameterization};
use diffusion_solvers::{ClassifierFreeGuidance, SolverError};
use diffusion_testbed::{GaussianMixture, GmmDenoiser};
use ndarray::{ArrayD, IxDyn};

type T = ArrayD<f64>;

fn gmm() -> GmmDenoiser {
    let g = GaussianMixture::isotropic(vec![0.3, 0.7], vec![vec![-2.0, 1.0], vec![3.0, 0.5]], &[0.5, 0.8])
        .unwrap();
    GmmDenoiser::new(g, Parameterization::Epsilon).unwrap()
}

fn x() -> T {
    ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![0.3, -1.2, 2.5, 0.1, -0.7, 1.9]).unwrap()
}

#[test]
fn scale_one_is_conditional_and_zero_is_unconditional() {
    let model = gmm();
    let level = NoiseLevel::new(500.0, 0.6, 0.8);
    let class = 1usize;
    let cond = model.with_cond(Some(&class)).predict(&x(), level).unwrap();
    let uncond = model.with_cond(None).predict(&x(), level).unwrap();
    assert!(
        (&cond - &uncond).iter().any(|v| v.abs() > 1e-3),
        "classes must differ"
    );
    let one = ClassifierFreeGuidance::new(&model, &class, 1.0, 0.0).unwrap();
    assert_eq!(one.predict(&x(), level).unwrap(), cond);
    let zero = ClassifierFreeGuidance::new(&model, &class, 0.0, 0.0).unwrap();
    assert_eq!(zero.predict(&x(), level).unwrap(), uncond);
    let w = 4.5;
    let guided = ClassifierFreeGuidance::new(&model, &class, w, 0.0)
        .unwrap()
        .predict(&x(), level)
        .unwrap();
    for ((g, c), u) in guided.iter().zip(cond.iter()).zip(uncond.iter()) {
        assert!((g - (u + w * (c - u))).abs() < 1e-12);
    }
    assert_eq!(Denoiser::<T>::parameterization(&one), Parameterization::Epsilon);
}

/// A model whose outputs are fixed: conditional `c`, unconditional `u`.
struct Fixed {
    c: T,
    u: T,
}

impl ConditionalDenoiser<T> for Fixed {
    type Cond = ();
    fn parameterization(&self) -> Parameterization {
        Parameterization::Epsilon
    }
    fn predict_cond(&self, _: &T, _: NoiseLevel, cond: Option<&()>) -> diffusion_core::Result<T> {
        Ok(if cond.is_some() {
            self.c.clone()
        } else {
            self.u.clone()
        })
    }
}

#[test]
fn guidance_rescale_matches_hand_computation() {
    let t = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&[2, 4]), v).unwrap();
    let model = Fixed {
        c: t(vec![1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 3.0]),
        u: t(vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
    };
    // Scale 2: g = [2, 4, 6, 8] and [1, 1, 1, 5]. Unbiased stds: item 0 cond sqrt(5/3),
    // guided 2 sqrt(5/3); item 1 cond 1, guided 2. Both ratios 1/2, so with phi = 0.7
    // the factor is 0.7 * 0.5 + 0.3 = 0.65.
    let want = [1.3, 2.6, 3.9, 5.2, 0.65, 0.65, 0.65, 3.25];
    let cfg = ClassifierFreeGuidance::new(&model, &(), 2.0, 0.7).unwrap();
    let out = cfg.predict(&model.c, NoiseLevel::new(1.0, 0.5, 0.5)).unwrap();
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-12, "{out} vs {want:?}");
    }
}

#[test]
fn bad_guidance_settings_are_errors() {
    let model = gmm();
    for (s, r) in [(f64::NAN, 0.0), (2.0, -0.1), (2.0, 1.5)] {
        let e = ClassifierFreeGuidance::<_, T>::new(&model, &0usize, s, r)
            .err()
            .unwrap();
        assert!(matches!(e, SolverError::InvalidConfig { .. }), "{e}");
    }
}
