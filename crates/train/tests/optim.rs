//! AdamW, learning-rate schedule, clipping and EMA against hand-computed closed forms.

use diffusion_train::{
    AdamW, AdamWConfig, Ema, LrSchedule, Param, Parameters, TrainError, clip_grad_norm, grad_norm,
};
use ndarray::{ArrayD, IxDyn, arr1};

/// One named parameter vector.
struct Vecs(Vec<(String, Param<f64>)>);

impl Vecs {
    fn one(values: &[f64]) -> Self {
        Self(vec![("w".into(), Param::new(arr1(values).into_dyn()))])
    }
    fn set_grad(&mut self, g: &[f64]) {
        self.0[0].1.grad = arr1(g).into_dyn();
    }
    fn value(&self) -> Vec<f64> {
        self.0[0].1.value.iter().copied().collect()
    }
}

impl Parameters<f64> for Vecs {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<f64>)) {
        for (n, p) in &self.0 {
            f(n, p)
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<f64>)) {
        for (n, p) in &mut self.0 {
            f(n, p)
        }
    }
}

#[test]
fn defaults_are_pytorchs() {
    let c = AdamWConfig::default();
    assert_eq!(
        (c.beta1, c.beta2, c.eps, c.weight_decay),
        (0.9, 0.999, 1e-8, 1e-2)
    );
}

#[test]
fn first_step_matches_hand_computation() {
    // p = 1, g = 0.5, lr = 0.1, wd = 0.01. PyTorch: p <- p (1 - lr wd) = 0.999; with
    // m_hat = g and v_hat = g^2 the step is lr g / (|g| + eps) = 0.1 * 0.5 / 0.50000001.
    let mut m = Vecs::one(&[1.0]);
    m.set_grad(&[0.5]);
    let mut opt = AdamW::new(AdamWConfig::default(), &m).unwrap();
    opt.step(&mut m, 0.1).unwrap();
    let want = 0.999 - 0.05 / 0.500_000_01;
    assert!((m.value()[0] - want).abs() < 1e-15, "{} vs {want}", m.value()[0]);
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn three_steps_match_textbook_adamw() {
    // Textbook form (Loshchilov & Hutter, with PyTorch's decoupled decay scaled by lr):
    // m_hat = m / (1 - b1^k), v_hat = v / (1 - b2^k), p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps).
    let cfg = AdamWConfig {
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-3,
        weight_decay: 0.1,
    };
    let grads = [[0.3, -2.0], [-0.1, 1.5], [0.7, 0.0]];
    let lrs = [0.05, 0.02, 0.01];
    let mut model = Vecs::one(&[0.5, -1.25]);
    let mut opt = AdamW::new(cfg, &model).unwrap();
    let (mut p, mut m, mut v) = ([0.5, -1.25], [0.0; 2], [0.0; 2]);
    for k in 0..3 {
        model.set_grad(&grads[k]);
        opt.step(&mut model, lrs[k]).unwrap();
        let kk = (k + 1) as i32;
        for i in 0..2 {
            let g = grads[k][i];
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g;
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g * g;
            let mh = m[i] / (1.0 - cfg.beta1.powi(kk));
            let vh = v[i] / (1.0 - cfg.beta2.powi(kk));
            p[i] = p[i] * (1.0 - lrs[k] * cfg.weight_decay) - lrs[k] * mh / (vh.sqrt() + cfg.eps);
        }
        for i in 0..2 {
            assert!(
                (model.value()[i] - p[i]).abs() < 1e-14,
                "step {k} elem {i}: {:?} vs {p:?}",
                model.value()
            );
        }
    }
    let mom = &opt.moments()[0];
    for i in 0..2 {
        assert!((mom.exp_avg[i] - m[i]).abs() < 1e-15);
        assert!((mom.exp_avg_sq[i] - v[i]).abs() < 1e-15);
    }
}

#[test]
fn zero_gradient_only_decays() {
    let mut m = Vecs::one(&[2.0, -4.0]);
    let mut opt = AdamW::new(AdamWConfig::default(), &m).unwrap();
    opt.step(&mut m, 0.5).unwrap();
    assert_eq!(
        m.value(),
        vec![2.0 * (1.0 - 0.5 * 0.01), -4.0 * (1.0 - 0.5 * 0.01)]
    );
}

#[test]
fn optimizer_rejects_other_models_and_bad_config() {
    let m = Vecs::one(&[1.0]);
    let mut opt = AdamW::new(AdamWConfig::default(), &m).unwrap();
    let mut other = Vecs::one(&[1.0, 2.0]);
    let err = opt.step(&mut other, 0.1).unwrap_err();
    assert!(err.to_string().contains("`w`"), "{err}");
    assert_eq!(other.value(), vec![1.0, 2.0], "nothing changes on error");
    assert!(matches!(
        opt.step(&mut Vecs::one(&[1.0]), -1.0),
        Err(TrainError::InvalidArgument { .. })
    ));
    for bad in [
        AdamWConfig {
            beta1: 1.0,
            ..Default::default()
        },
        AdamWConfig {
            beta2: -0.1,
            ..Default::default()
        },
        AdamWConfig {
            eps: 0.0,
            ..Default::default()
        },
        AdamWConfig {
            weight_decay: f64::NAN,
            ..Default::default()
        },
    ] {
        assert!(
            matches!(AdamW::new(bad, &m), Err(TrainError::InvalidArgument { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn lr_schedule_endpoints_and_shape() {
    let s = LrSchedule {
        peak: 1e-3,
        warmup_steps: 10,
        total_steps: 110,
        min_lr: 1e-5,
    };
    s.validate().unwrap();
    assert_eq!(s.lr_at(0), 0.0);
    assert!((s.lr_at(5) - 0.5e-3).abs() < 1e-18);
    assert_eq!(s.lr_at(10), 1e-3);
    // Half way through the decay the cosine is at its midpoint.
    assert!((s.lr_at(60) - (1e-3 + 1e-5) / 2.0).abs() < 1e-15);
    assert!((s.lr_at(110) - 1e-5).abs() < 1e-18);
    assert!((s.lr_at(10_000) - 1e-5).abs() < 1e-18);
    let mut prev = f64::INFINITY;
    for k in 10..=110 {
        assert!(s.lr_at(k) <= prev);
        prev = s.lr_at(k);
    }
    assert_eq!(LrSchedule::constant(3e-4).lr_at(12345), 3e-4);
    let bad = LrSchedule {
        warmup_steps: 200,
        ..s
    };
    assert!(bad.validate().is_err());
    assert!(LrSchedule { min_lr: 1.0, ..s }.validate().is_err());
}

#[test]
fn clipping_follows_torch_clip_grad_norm() {
    let mut m = Vecs(vec![
        ("a".into(), Param::new(arr1(&[0.0, 0.0]).into_dyn())),
        ("b".into(), Param::new(ArrayD::zeros(IxDyn(&[1])))),
    ]);
    m.0[0].1.grad = arr1(&[3.0, 0.0]).into_dyn();
    m.0[1].1.grad = arr1(&[4.0]).into_dyn();
    assert_eq!(grad_norm(&m), 5.0);
    // Above the norm: untouched.
    assert_eq!(clip_grad_norm(&mut m, 10.0).unwrap(), 5.0);
    assert_eq!(m.0[0].1.grad[0], 3.0);
    // Below: scaled by max / (norm + 1e-6).
    assert_eq!(clip_grad_norm(&mut m, 1.0).unwrap(), 5.0);
    let c = 1.0 / (5.0 + 1e-6);
    assert!((m.0[0].1.grad[0] - 3.0 * c).abs() < 1e-15);
    assert!((m.0[1].1.grad[0] - 4.0 * c).abs() < 1e-15);
    assert!((grad_norm(&m) - 5.0 * c).abs() < 1e-15);
    assert!(clip_grad_norm(&mut m, 0.0).is_err());
    m.0[1].1.grad[0] = f64::NAN;
    assert!(clip_grad_norm(&mut m, 1.0).is_err());
}

#[test]
fn ema_matches_closed_form() {
    let mut m = Vecs::one(&[1.0]);
    let mut ema = Ema::new(&m, 0.9, false).unwrap();
    m.0[0].1.value[0] = 3.0;
    ema.update(&m).unwrap();
    m.0[0].1.value[0] = -1.0;
    ema.update(&m).unwrap();
    // s1 = 0.9 * 1 + 0.1 * 3 = 1.2; s2 = 0.9 * 1.2 + 0.1 * (-1) = 0.98.
    assert!((ema.weights()[0].1[0] - 0.98).abs() < 1e-15);
    let mut target = Vecs::one(&[0.0]);
    ema.copy_to(&mut target).unwrap();
    assert!((target.value()[0] - 0.98).abs() < 1e-15);

    // Warm-up: (1 + n) / (10 + n) = 1/10, 2/11, 3/12, then capped at 0.2.
    let mut m = Vecs::one(&[0.0]);
    let mut ema = Ema::new(&m, 0.2, true).unwrap();
    let mut s = 0.0;
    for (k, d) in [0.1, 2.0 / 11.0, 0.2, 0.2].into_iter().enumerate() {
        assert!((ema.current_decay() - d).abs() < 1e-15);
        m.0[0].1.value[0] = k as f64 + 1.0;
        ema.update(&m).unwrap();
        s = d * s + (1.0 - d) * (k as f64 + 1.0);
        assert!((ema.weights()[0].1[0] - s).abs() < 1e-14);
    }
    assert!(Ema::new(&m, 1.5, false).is_err());
    assert!(ema.update(&Vecs::one(&[1.0, 2.0])).is_err());
}
