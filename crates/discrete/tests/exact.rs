//! Exact checks of the discrete processes against dense matrix products and Bayes' rule
//! computed by enumeration (none of these use the closed forms under test).

use diffusion_core::Rng;
use diffusion_discrete::{
    DiscreteError, Matrix, Process, TimestepSampler, VqSchedule, cosine_alpha_bar, x0_probabilities,
};

const T: usize = 8;

/// Posterior entries are ratios of replacement probabilities that VQ-Diffusion's schedule
/// makes ~1e-6 and forms as `1 - abar - gbar`; the closed-form `Qbar_{t-1}` and the dense
/// product of one-step matrices agree to ~1e-16 absolute, i.e. ~1e-10 relative in those
/// terms. A wrong formula is off by O(1e-2) or more.
const POSTERIOR_TOL: f64 = 1e-9;

fn processes() -> Vec<(&'static str, Process)> {
    vec![
        (
            "uniform",
            Process::uniform(5, &cosine_alpha_bar(T, 0.008)).unwrap(),
        ),
        ("absorbing", Process::absorbing(5, T).unwrap()),
        (
            "mask_and_replace",
            Process::mask_and_replace(5, T, VqSchedule::default()).unwrap(),
        ),
        (
            "mask_and_replace_fast",
            Process::mask_and_replace(
                6,
                T,
                VqSchedule {
                    alpha_bar_1: 0.9,
                    alpha_bar_t: 0.05,
                    gamma_bar_1: 0.05,
                    gamma_bar_t: 0.9,
                },
            )
            .unwrap(),
        ),
        (
            "marginal",
            Process::marginal(vec![0.5, 0.2, 0.2, 0.1], T).unwrap(),
        ),
    ]
}

/// `Q_1 ... Q_t` multiplied out densely.
fn dense_products(p: &Process) -> Vec<Matrix> {
    let mut out = vec![Matrix::identity(p.k())];
    for t in 1..=p.steps() {
        let next = out[t - 1].matmul(&p.step_matrix(t).unwrap()).unwrap();
        out.push(next);
    }
    out
}

fn data_categories(p: &Process) -> Vec<usize> {
    (0..p.k()).filter(|&i| Some(i) != p.mask()).collect()
}

#[test]
fn cumulative_matrices_equal_products_of_one_step_matrices() {
    for (name, p) in processes() {
        let prods = dense_products(&p);
        for t in 0..=p.steps() {
            let closed = p.cumulative_matrix(t).unwrap();
            let diff = closed.max_abs_diff(&prods[t]);
            assert!(diff < 1e-12, "{name} t={t}: |Qbar - prod Q| = {diff:e}");
            for i in 0..p.k() {
                let s: f64 = closed.row(i).iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{name} t={t} row {i} sums to {s}");
                assert!(closed.row(i).iter().all(|&v| v >= 0.0));
            }
            let mut row = vec![0.0; p.k()];
            for i in data_categories(&p) {
                p.marginal_row(t, i, &mut row).unwrap();
                assert_eq!(row.as_slice(), closed.row(i));
            }
        }
    }
}

#[test]
fn schedules_reach_their_stationary_state() {
    let p = Process::absorbing(4, 10).unwrap();
    assert_eq!(p.cumulative(10).unwrap(), (0.0, 0.0, 1.0));
    // D3PM absorbing: masking probability 1 / (T - t + 1) at step t.
    for t in 1..=10 {
        let (_, _, g) = p.one_step(t).unwrap();
        assert!((g - 1.0 / (10 - t + 1) as f64).abs() < 1e-12);
    }
    let vq = Process::mask_and_replace(10, 100, VqSchedule::default()).unwrap();
    let (a, b, g) = vq.cumulative(100).unwrap();
    assert!((a - 0.000009).abs() < 1e-15 && (g - 0.99999).abs() < 1e-15);
    assert!((a + b + g - 1.0).abs() < 1e-15);
    let mg = Process::marginal(vec![0.7, 0.3], 50).unwrap();
    assert!(mg.cumulative(50).unwrap().0 < 1e-12);
}

#[test]
fn posterior_sums_to_one_and_matches_bayes_by_enumeration() {
    for (name, p) in processes() {
        let prods = dense_products(&p);
        let k = p.k();
        let mut post = vec![0.0; k];
        for t in 1..=p.steps() {
            let step = p.step_matrix(t).unwrap();
            for x0 in data_categories(&p) {
                for xt in 0..k {
                    // joint q(x_{t-1} = j, x_t | x0) by enumeration over j.
                    let joint: Vec<f64> = (0..k)
                        .map(|j| prods[t - 1].get(x0, j) * step.get(j, xt))
                        .collect();
                    let evidence: f64 = joint.iter().sum();
                    let res = p.posterior(t, xt, x0, &mut post);
                    if evidence == 0.0 {
                        assert!(matches!(res, Err(DiscreteError::Impossible { .. })), "{name}");
                        continue;
                    }
                    res.unwrap();
                    let s: f64 = post.iter().sum();
                    assert!(
                        (s - 1.0).abs() < 1e-12,
                        "{name} t={t} x0={x0} xt={xt}: sums to {s}"
                    );
                    for j in 0..k {
                        let bayes = joint[j] / evidence;
                        assert!(
                            (post[j] - bayes).abs() < POSTERIOR_TOL,
                            "{name} t={t} x0={x0} xt={xt} j={j}: {} vs {bayes}",
                            post[j]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn model_posterior_is_the_mixture_of_exact_posteriors() {
    let mut rng = Rng::new(7);
    for (name, p) in processes() {
        let prods = dense_products(&p);
        let k = p.k();
        let mut out = vec![0.0; k];
        for t in 1..=p.steps() {
            let step = p.step_matrix(t).unwrap();
            for xt in 0..k {
                let mut px0: Vec<f64> = (0..k).map(|_| rng.uniform() + 0.05).collect();
                if let Some(mk) = p.mask() {
                    px0[mk] = 0.0;
                }
                let total: f64 = px0.iter().sum();
                px0.iter_mut().for_each(|v| *v /= total);
                // Enumeration: mixture over the x0 that can produce x_t.
                let mut expect = vec![0.0; k];
                let mut mass = 0.0;
                for x0 in data_categories(&p) {
                    let joint: Vec<f64> = (0..k)
                        .map(|j| prods[t - 1].get(x0, j) * step.get(j, xt))
                        .collect();
                    let ev: f64 = joint.iter().sum();
                    if ev > 0.0 {
                        mass += px0[x0];
                        for j in 0..k {
                            expect[j] += px0[x0] * joint[j] / ev;
                        }
                    }
                }
                let res = p.model_posterior(t, xt, &px0, &mut out);
                if mass == 0.0 {
                    assert!(
                        matches!(res, Err(DiscreteError::NoCompatibleMass { .. })),
                        "{name}"
                    );
                    continue;
                }
                res.unwrap();
                let s: f64 = out.iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{name}: sums to {s}");
                for j in 0..k {
                    assert!(
                        (out[j] - expect[j] / mass).abs() < POSTERIOR_TOL,
                        "{name} t={t} xt={xt} j={j}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_model_predicting_the_true_x0_recovers_it() {
    for (name, p) in processes() {
        let k = p.k();
        let data = data_categories(&p);
        let mut rng = Rng::new(11);
        let x0: Vec<usize> = (0..200)
            .map(|_| data[(rng.uniform() * data.len() as f64) as usize])
            .collect();
        let mut onehot = vec![0.0; x0.len() * k];
        for (c, &x) in x0.iter().enumerate() {
            onehot[c * k + x] = 1.0;
        }
        let mut x = p.sample_forward(p.steps(), &x0, &mut rng).unwrap();
        let mut post = vec![0.0; k];
        for t in (1..=p.steps()).rev() {
            // The model posterior of a point-mass prediction is the exact posterior.
            for c in 0..x0.len() {
                let mut q = vec![0.0; k];
                p.posterior(t, x[c], x0[c], &mut q).unwrap();
                p.model_posterior(t, x[c], &onehot[c * k..(c + 1) * k], &mut post)
                    .unwrap();
                for j in 0..k {
                    assert!((q[j] - post[j]).abs() < 1e-14, "{name} t={t}: {q:?} vs {post:?}");
                }
            }
            x = p.sample_step(t, &x, &onehot, &mut rng).unwrap();
        }
        assert_eq!(x, x0, "{name}");
        // ...and its variational loss is zero at every step.
        let big: Vec<f64> = onehot
            .iter()
            .map(|v| if *v > 0.0 { 0.0 } else { -800.0 })
            .collect();
        let xt = p.sample_forward(3, &x0, &mut rng).unwrap();
        let loss = p
            .loss(3, &x0, &xt, &big, &vec![1.0; x0.len()], 0.0, None)
            .unwrap();
        assert!(loss.vb.abs() < 1e-12, "{name}: {}", loss.vb);
    }
}

#[test]
fn forward_samples_follow_the_cumulative_marginals() {
    for (name, p) in processes() {
        let k = p.k();
        let n = 40_000;
        let x0 = data_categories(&p)[0];
        let mut rng = Rng::new(3);
        for t in [1, p.steps() / 2, p.steps()] {
            let xs = p.sample_forward(t, &vec![x0; n], &mut rng).unwrap();
            let mut row = vec![0.0; k];
            p.marginal_row(t, x0, &mut row).unwrap();
            for j in 0..k {
                let freq = xs.iter().filter(|&&x| x == j).count() as f64 / n as f64;
                let sd = (row[j] * (1.0 - row[j]) / n as f64).sqrt();
                assert!(
                    (freq - row[j]).abs() <= 5.0 * sd + 1e-12,
                    "{name} t={t} j={j}: {freq} vs {}",
                    row[j]
                );
            }
        }
    }
}

#[test]
fn forward_sampling_is_determined_by_the_seed() {
    let p = Process::mask_and_replace(7, 50, VqSchedule::default()).unwrap();
    let x0: Vec<usize> = (0..100).map(|i| i % 6).collect();
    let a = p.sample_forward(25, &x0, &mut Rng::new(5)).unwrap();
    let b = p.sample_forward(25, &x0, &mut Rng::new(5)).unwrap();
    let c = p.sample_forward(25, &x0, &mut Rng::new(6)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

fn loss_of(p: &Process, t: usize, x0: &[usize], xt: &[usize], logits: &[f64], w: &[f64], aux: f64) -> f64 {
    p.loss(t, x0, xt, logits, w, aux, None).unwrap().total
}

#[test]
fn loss_gradient_matches_finite_differences() {
    let mut rng = Rng::new(21);
    for (name, p) in processes() {
        let k = p.k();
        let data = data_categories(&p);
        let cells = 6;
        for t in [1, 2, p.steps() / 2, p.steps()] {
            let x0: Vec<usize> = (0..cells).map(|c| data[c % data.len()]).collect();
            let xt = p.sample_forward(t, &x0, &mut rng).unwrap();
            let logits: Vec<f64> = (0..cells * k).map(|_| 2.0 * rng.normal()).collect();
            let mut w: Vec<f64> = (0..cells).map(|_| 0.5 + rng.uniform()).collect();
            w[1] = 0.0;
            let aux = 0.3;
            let mut grad = vec![f64::NAN; cells * k];
            p.loss(t, &x0, &xt, &logits, &w, aux, Some(&mut grad)).unwrap();
            let h = 1e-5;
            for i in 0..cells * k {
                let mut up = logits.clone();
                up[i] += h;
                let mut down = logits.clone();
                down[i] -= h;
                let fd = (loss_of(&p, t, &x0, &xt, &up, &w, aux) - loss_of(&p, t, &x0, &xt, &down, &w, aux))
                    / (2.0 * h);
                assert!(
                    (fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{name} t={t} logit {i}: analytic {} vs fd {fd}",
                    grad[i]
                );
            }
            // The weighted-out cell contributes nothing.
            assert!(grad[k..2 * k].iter().all(|&g| g == 0.0));
        }
    }
}

#[test]
fn loss_at_t1_is_the_negative_log_likelihood_and_aux_is_cross_entropy() {
    let p = Process::mask_and_replace(5, T, VqSchedule::default()).unwrap();
    let logits = [0.3, -1.0, 2.0, 0.5, 7.0]; // the mask's logit (last) is ignored
    let mut px0 = [0.0; 5];
    x0_probabilities(&p, &logits, &mut px0).unwrap();
    let z: f64 = logits[..4].iter().map(|l| l.exp()).sum();
    for j in 0..4 {
        assert!((px0[j] - logits[j].exp() / z).abs() < 1e-15);
    }
    assert_eq!(px0[4], 0.0);
    let l = p.loss(1, &[2], &[4], &logits, &[2.0], 0.5, None).unwrap();
    let nll = -(px0[2]).ln();
    assert!((l.vb - 2.0 * nll).abs() < 1e-12);
    assert!((l.aux - 2.0 * nll).abs() < 1e-12);
    assert!((l.total - 3.0 * nll).abs() < 1e-12);
}

#[test]
fn importance_sampler_is_uniform_then_proportional_to_rms_loss_and_unbiased() {
    let steps = 5;
    let mut s = TimestepSampler::with_settings(steps, 2, 1.0).unwrap();
    assert_eq!(s.probabilities(), vec![0.2; 5]);
    for t in 1..=steps {
        s.record(t, 100.0).unwrap();
        s.record(t, t as f64).unwrap(); // EMA weight 1: only the last value counts
    }
    let p = s.probabilities();
    let root: Vec<f64> = (1..=steps)
        .map(|t| ((t * t) as f64 + 1e-10).sqrt() + 1e-4)
        .collect();
    let total: f64 = root.iter().sum();
    for t in 0..steps {
        assert!((p[t] - root[t] / total).abs() < 1e-15);
    }
    // E[w L_t] under p equals the plain mean of L_t.
    let losses = [3.0, 1.0, 4.0, 1.0, 5.0];
    let weighted: f64 = (0..steps).map(|i| p[i] / (steps as f64 * p[i]) * losses[i]).sum();
    assert!((weighted - 14.0 / 5.0).abs() < 1e-12);
    let mut rng = Rng::new(1);
    let mut counts = [0usize; 5];
    for _ in 0..50_000 {
        let (t, w) = s.sample(&mut rng);
        counts[t - 1] += 1;
        assert!((w - 1.0 / (steps as f64 * p[t - 1])).abs() < 1e-12);
    }
    for i in 0..steps {
        let f = counts[i] as f64 / 50_000.0;
        assert!((f - p[i]).abs() < 5.0 * (p[i] * (1.0 - p[i]) / 50_000.0).sqrt());
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let p = Process::mask_and_replace(5, T, VqSchedule::default()).unwrap();
    let mut out = vec![0.0; 5];
    assert!(matches!(
        p.posterior(0, 1, 1, &mut out),
        Err(DiscreteError::Timestep { .. })
    ));
    assert!(matches!(
        p.posterior(T + 1, 1, 1, &mut out),
        Err(DiscreteError::Timestep { .. })
    ));
    assert!(matches!(
        p.posterior(2, 5, 1, &mut out),
        Err(DiscreteError::CategoryOutOfRange { .. })
    ));
    assert!(matches!(
        p.posterior(2, 1, 4, &mut out),
        Err(DiscreteError::MaskedX0 { .. })
    ));
    assert!(matches!(
        p.posterior(2, 1, 1, &mut [0.0; 4]),
        Err(DiscreteError::LengthMismatch { .. })
    ));
    assert!(matches!(
        p.sample_forward(2, &[0, 4], &mut Rng::new(0)),
        Err(DiscreteError::MaskedX0 { cell: 1 })
    ));
    let nan = [0.0, f64::NAN, 0.0, 0.0, 0.0];
    assert!(matches!(
        p.loss(2, &[0], &[0], &nan, &[1.0], 0.1, None),
        Err(DiscreteError::NonFinite(_))
    ));
    assert!(matches!(
        p.loss(2, &[0, 1], &[0], &[0.0; 10], &[1.0, 1.0], 0.1, None),
        Err(DiscreteError::LengthMismatch { .. })
    ));
    assert!(matches!(
        Process::from_cumulative(3, false, vec![0.5, 0.5, 0.0], &[0.5, 0.7], &[0.0, 0.0]),
        Err(DiscreteError::InvalidArgument { .. })
    ));
    assert!(matches!(
        Process::marginal(vec![0.5, 0.6], 4),
        Err(DiscreteError::InvalidArgument { .. })
    ));
    assert!(matches!(
        Process::uniform(1, &[0.5]),
        Err(DiscreteError::InvalidArgument { .. })
    ));
    let abs = Process::absorbing(4, 4).unwrap();
    // Absorbing: a visible token can only come from itself.
    assert!(matches!(
        abs.posterior(2, 1, 0, &mut [0.0; 4]),
        Err(DiscreteError::Impossible { .. })
    ));
    assert!(matches!(
        abs.model_posterior(2, 1, &[1.0, 0.0, 0.0, 0.0], &mut [0.0; 4]),
        Err(DiscreteError::NoCompatibleMass { xt: 1 })
    ));
    assert!(matches!(
        TimestepSampler::new(0),
        Err(DiscreteError::InvalidArgument { .. })
    ));
}
