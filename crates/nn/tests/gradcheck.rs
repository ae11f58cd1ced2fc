//! Finite-difference gradient checks in f64 for every layer and for small model configs.
//!
//! Oracle: central differences `(L(p + h) - L(p - h)) / 2h` of `L = sum(y * r)` with a
//! fixed random `r`; with h = 1e-5 in f64 the truncation and rounding errors are ~1e-9,
//! so analytic and numeric gradients must agree to 1e-6 relative to the gradient scale.

use diffusion_core::Rng;
use diffusion_nn::layers::*;
use diffusion_nn::models::*;
use diffusion_nn::{Network, Parameters};
use ndarray::{ArrayD, Axis, IxDyn, Slice};

fn randn(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    let mut v = vec![0.0; shape.iter().product()];
    rng.fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// A layer under test: `loss` is the plain forward; `grad` runs forward + backward.
trait Check: Parameters<f64> {
    fn loss(&self, x: &ArrayD<f64>, r: &ArrayD<f64>) -> f64;
    fn grad(&mut self, x: &ArrayD<f64>, r: &ArrayD<f64>) -> ArrayD<f64>;
}

fn dot(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compares analytic and numeric gradients on up to `samples` entries of x and of every parameter.
fn gradcheck<L: Check>(what: &str, layer: &mut L, x: &ArrayD<f64>, r: &ArrayD<f64>, samples: usize) {
    const H: f64 = 1e-5;
    layer.zero_grad();
    let dx = layer.grad(x, r);
    assert_eq!(dx.shape(), x.shape(), "{what}: dx shape");
    let scale = dx.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    let stride = (x.len() / samples).max(1);
    for i in (0..x.len()).step_by(stride) {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += H;
        let mut xm = x.clone();
        xm.as_slice_mut().unwrap()[i] -= H;
        let num = (layer.loss(&xp, r) - layer.loss(&xm, r)) / (2.0 * H);
        let ana = dx.as_slice().unwrap()[i];
        assert!(
            (num - ana).abs() <= 1e-6 * scale,
            "{what}: dx[{i}] analytic {ana} numeric {num}"
        );
    }
    let mut grads: Vec<(String, Vec<f64>)> = Vec::new();
    layer.visit(&mut |n, p| grads.push((n.to_string(), p.grad.iter().copied().collect())));
    assert!(grads.iter().all(|(_, g)| g.iter().all(|v| v.is_finite())));
    for (name, g) in &grads {
        let scale = g.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        let stride = (g.len() / samples).max(1);
        for i in (0..g.len()).step_by(stride) {
            let bump = |delta: f64, layer: &mut L| {
                layer.visit_mut(&mut |n, p| {
                    if n == name {
                        p.value.as_slice_mut().unwrap()[i] += delta;
                    }
                })
            };
            bump(H, layer);
            let lp = layer.loss(x, r);
            bump(-2.0 * H, layer);
            let lm = layer.loss(x, r);
            bump(H, layer);
            let num = (lp - lm) / (2.0 * H);
            assert!(
                (num - g[i]).abs() <= 1e-6 * scale,
                "{what}: d{name}[{i}] analytic {} numeric {num}",
                g[i]
            );
        }
    }
}

macro_rules! simple_check {
    ($ty:ty, |$s:ident, $x:ident| $fwd:expr, |$s2:ident, $x2:ident, $r:ident| $bwd:expr) => {
        impl Check for $ty {
            fn loss(&self, $x: &ArrayD<f64>, r: &ArrayD<f64>) -> f64 {
                let $s = self;
                dot(&$fwd, r)
            }
            fn grad(&mut self, $x2: &ArrayD<f64>, $r: &ArrayD<f64>) -> ArrayD<f64> {
                let $s2 = self;
                $bwd
            }
        }
    };
}

simple_check!(Linear<f64>, |s, x| s.apply(x).unwrap(), |s, x, r| {
    let (_, c) = s.forward(x).unwrap();
    s.backward(&c, r).unwrap()
});
simple_check!(Conv<f64>, |s, x| s.apply(x).unwrap(), |s, x, r| {
    let (_, c) = s.forward(x).unwrap();
    s.backward(&c, r).unwrap()
});
simple_check!(LayerNorm<f64>, |s, x| s.forward(x).unwrap().0, |s, x, r| {
    let (_, c) = s.forward(x).unwrap();
    s.backward(&c, r).unwrap()
});
simple_check!(GroupNorm<f64>, |s, x| s.forward(x).unwrap().0, |s, x, r| {
    let (_, c) = s.forward(x).unwrap();
    s.backward(&c, r).unwrap()
});
simple_check!(
    MultiheadAttention<f64>,
    |s, x| s.forward(x, None).unwrap().0,
    |s, x, r| {
        let (_, c) = s.forward(x, None).unwrap();
        s.backward(&c, r).unwrap().0
    }
);

/// Cross-attention to a fixed context: checks the query input's and the parameters'
/// gradients (the keys and values come from `ctx`).
struct CrossAttention {
    mha: MultiheadAttention<f64>,
    ctx: ArrayD<f64>,
}
impl Parameters<f64> for CrossAttention {
    fn visit(&self, f: &mut dyn FnMut(&str, &diffusion_nn::Param<f64>)) {
        self.mha.visit(f)
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut diffusion_nn::Param<f64>)) {
        self.mha.visit_mut(f)
    }
}
simple_check!(
    CrossAttention,
    |s, x| s.mha.forward(x, Some(&s.ctx)).unwrap().0,
    |s, x, r| {
        let (_, c) = s.mha.forward(x, Some(&s.ctx)).unwrap();
        s.mha.backward(&c, r).unwrap().0
    }
);

/// Parameter-free layers wrapped so they fit the harness.
struct Free<F>(F);
impl<F> Parameters<f64> for Free<F> {
    fn visit(&self, _: &mut dyn FnMut(&str, &diffusion_nn::Param<f64>)) {}
    fn visit_mut(&mut self, _: &mut dyn FnMut(&str, &mut diffusion_nn::Param<f64>)) {}
}
impl<F: Fn(&ArrayD<f64>, Option<&ArrayD<f64>>) -> (ArrayD<f64>, ArrayD<f64>)> Check for Free<F> {
    fn loss(&self, x: &ArrayD<f64>, r: &ArrayD<f64>) -> f64 {
        dot(&(self.0)(x, None).0, r)
    }
    fn grad(&mut self, x: &ArrayD<f64>, r: &ArrayD<f64>) -> ArrayD<f64> {
        (self.0)(x, Some(r)).1
    }
}

#[test]
fn linear_gradients() {
    let mut rng = Rng::new(1);
    let mut l = Linear::<f64>::new(7, 5, true, &mut rng);
    let x = randn(&[2, 3, 7], &mut rng);
    let r = randn(&[2, 3, 5], &mut rng);
    gradcheck("linear", &mut l, &x, &r, 40);
}

/// (rank, cin, cout, kernel, stride, pad, groups, spatial)
type ConvCase = (
    usize,
    usize,
    usize,
    &'static [usize],
    &'static [usize],
    &'static [usize],
    usize,
    &'static [usize],
);

#[test]
fn conv_gradients_all_ranks_strides_padding_groups() {
    let mut rng = Rng::new(2);
    // (rank, cin, cout, kernel, stride, pad, groups, spatial)
    let cases: &[ConvCase] = &[
        (1, 3, 4, &[3], &[1], &[1], 1, &[9]),
        (1, 4, 6, &[2], &[2], &[0], 2, &[8]),
        (2, 3, 4, &[3, 3], &[1, 1], &[1, 1], 1, &[6, 5]),
        // Large enough (8 x 8 tiles) for the Winograd path, odd width cropped.
        (2, 3, 4, &[3, 3], &[1, 1], &[1, 1], 1, &[16, 15]),
        (2, 4, 4, &[3, 2], &[2, 1], &[1, 0], 2, &[7, 6]),
        (2, 3, 5, &[1, 1], &[1, 1], &[0, 0], 1, &[4, 4]),
        (2, 4, 6, &[2, 2], &[2, 2], &[0, 0], 1, &[4, 4]),
        (3, 2, 3, &[3, 3, 3], &[2, 1, 1], &[1, 1, 0], 1, &[4, 3, 4]),
    ];
    for &(rank, cin, cout, k, s, p, g, sp) in cases {
        let mut conv = Conv::<f64>::new(cin, cout, k, s, p, g, true, &mut rng).unwrap();
        let mut shape = vec![2, cin];
        shape.extend_from_slice(sp);
        let x = randn(&shape, &mut rng);
        let y = conv.apply(&x).unwrap();
        let r = randn(y.shape(), &mut rng);
        gradcheck(
            &format!("conv{rank}d {k:?} s{s:?} p{p:?} g{g}"),
            &mut conv,
            &x,
            &r,
            25,
        );
    }
}

#[test]
fn conv_matches_direct_convolution() {
    // Oracle: the textbook definition summed in f64 loops.
    let mut rng = Rng::new(3);
    let conv = Conv::<f64>::new(4, 6, &[3, 2], &[2, 1], &[1, 1], 2, true, &mut rng).unwrap();
    let x = randn(&[2, 4, 7, 5], &mut rng);
    let y = conv.apply(&x).unwrap();
    let w = &conv.weight.value;
    let b = &conv.bias.as_ref().unwrap().value;
    let (ho, wo) = (y.shape()[2], y.shape()[3]);
    assert_eq!((ho, wo), ((7 + 2 - 3) / 2 + 1, 5 + 2 - 2 + 1));
    for n in 0..2 {
        for o in 0..6 {
            let grp = o / 3;
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = b[[o]];
                    for c in 0..2 {
                        for ki in 0..3 {
                            for kj in 0..2 {
                                let (yi, xj) = ((i * 2 + ki) as isize - 1, (j + kj) as isize - 1);
                                if yi >= 0 && xj >= 0 && yi < 7 && xj < 5 {
                                    acc += w[[o, c, ki, kj]] * x[[n, grp * 2 + c, yi as usize, xj as usize]];
                                }
                            }
                        }
                    }
                    assert!((acc - y[[n, o, i, j]]).abs() < 1e-12);
                }
            }
        }
    }
}

/// The textbook 3x3, stride 1, padding 1 convolution summed in f64 loops, and its exact
/// adjoints: `(y, dx, dw)` for input `x` `[n, cin, h, w]`, weights `w`, bias `b` and
/// output gradient `dy`.
fn direct_same_conv3x3(
    x: &ArrayD<f64>,
    w: &ArrayD<f64>,
    b: &ArrayD<f64>,
    dy: &ArrayD<f64>,
) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
    let (n, cin, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let cout = w.shape()[0];
    let mut y = ArrayD::zeros(IxDyn(&[n, cout, h, wd]));
    let mut dx = ArrayD::zeros(x.raw_dim());
    let mut dw = ArrayD::zeros(w.raw_dim());
    for bi in 0..n {
        for o in 0..cout {
            for i in 0..h {
                for j in 0..wd {
                    let mut acc = b[[o]];
                    let g = dy[[bi, o, i, j]];
                    for c in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (yi, xj) = ((i + ky) as isize - 1, (j + kx) as isize - 1);
                                if yi >= 0 && xj >= 0 && (yi as usize) < h && (xj as usize) < wd {
                                    let at = [bi, c, yi as usize, xj as usize];
                                    acc += w[[o, c, ky, kx]] * x[at];
                                    dx[at] += g * w[[o, c, ky, kx]];
                                    dw[[o, c, ky, kx]] += g * x[at];
                                }
                            }
                        }
                    }
                    y[[bi, o, i, j]] = acc;
                }
            }
        }
    }
    (y, dx, dw)
}

fn max_rel_err(got: impl IntoIterator<Item = f64>, want: &ArrayD<f64>) -> f64 {
    let scale = want.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    got.into_iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()))
        / scale
}

#[test]
fn winograd_convolutions_match_the_direct_sum() {
    // The 3x3 same-padded convolutions run by Winograd F(2x2, 3x3) when a task has >= 64
    // tiles: one chunk with a cropped odd edge; with 64 channels, chunks of tile rows, on
    // the batch-parallel (5 items) and the product-parallel (1 item, rows of 13 tiles:
    // blocks of 8, 4 and 1) paths; and small planes in tasks of 4 whole items (one task,
    // and two with an odd height).
    // Oracle: direct sums in f64 (forward, dx and dW).
    let mut rng = Rng::new(11);
    let cases = [
        (2, 3, 4, 17, 16),
        (1, 64, 64, 18, 26),
        (5, 64, 48, 16, 17),
        (4, 3, 5, 8, 8),
        (8, 16, 8, 7, 8),
    ];
    for (batch, cin, cout, h, w) in cases {
        let mut conv = Conv::<f64>::square(2, cin, cout, 3, 1, 1, &mut rng).unwrap();
        let x = randn(&[batch, cin, h, w], &mut rng);
        let dy = randn(&[batch, cout, h, w], &mut rng);
        let (y_ref, dx_ref, dw_ref) =
            direct_same_conv3x3(&x, &conv.weight.value, &conv.bias.as_ref().unwrap().value, &dy);
        let (y, cache) = conv.forward(&x).unwrap();
        let case = format!("{batch}x{cin}x{h}x{w} -> {cout}");
        let e = max_rel_err(y.iter().copied(), &y_ref);
        assert!(e < 1e-13, "{case}: forward rel err {e:e}");
        conv.zero_grad();
        let dx = conv.backward(&cache, &dy).unwrap();
        let e = max_rel_err(dx.iter().copied(), &dx_ref);
        assert!(e < 1e-13, "{case}: dx rel err {e:e}");
        let e = max_rel_err(conv.weight.grad.iter().copied(), &dw_ref);
        assert!(e < 1e-13, "{case}: dW rel err {e:e}");
        // f32: the transforms' rounding stays at the level of the direct sum.
        let mut c32 = Conv::<f32>::square(2, cin, cout, 3, 1, 1, &mut rng).unwrap();
        c32.weight.value = conv.weight.value.mapv(|v| v as f32);
        c32.bias.as_mut().unwrap().value = conv.bias.as_ref().unwrap().value.mapv(|v| v as f32);
        let (y32, cache32) = c32.forward(&x.mapv(|v| v as f32)).unwrap();
        let e = max_rel_err(y32.iter().map(|&v| v as f64), &y_ref);
        assert!(e < 2e-6, "{case}: f32 forward rel err {e:e}");
        let dx32 = c32.backward(&cache32, &dy.mapv(|v| v as f32)).unwrap();
        let e = max_rel_err(dx32.iter().map(|&v| v as f64), &dx_ref);
        assert!(e < 2e-6, "{case}: f32 dx rel err {e:e}");
        let e = max_rel_err(c32.weight.grad.iter().map(|&v| v as f64), &dw_ref);
        assert!(e < 2e-6, "{case}: f32 dW rel err {e:e}");
    }
}

#[test]
fn norm_gradients() {
    let mut rng = Rng::new(4);
    let mut ln = LayerNorm::<f64>::new(6, 1e-5, true);
    // Non-trivial affine parameters.
    ln.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += 0.3 * rng.normal()));
    let x = randn(&[3, 4, 6], &mut rng);
    let r = randn(&[3, 4, 6], &mut rng);
    gradcheck("layernorm affine", &mut ln, &x, &r, 40);
    let mut ln = LayerNorm::<f64>::new(6, 1e-6, false);
    gradcheck("layernorm plain", &mut ln, &x, &r, 40);
    let mut gn = GroupNorm::<f64>::new(2, 6, 1e-5).unwrap();
    gn.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += 0.3 * rng.normal()));
    let x = randn(&[2, 6, 3, 2], &mut rng);
    let r = randn(&[2, 6, 3, 2], &mut rng);
    gradcheck("groupnorm", &mut gn, &x, &r, 40);
}

#[test]
fn attention_gradients_self_and_cross() {
    let mut rng = Rng::new(5);
    let mut mha = MultiheadAttention::<f64>::new(8, 2, &mut rng).unwrap();
    mha.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += 0.2 * rng.normal()));
    let x = randn(&[2, 5, 8], &mut rng);
    let r = randn(&[2, 5, 8], &mut rng);
    gradcheck("self-attention", &mut mha, &x, &r, 40);

    // Cross-attention: dx and the parameters through the harness, dctx below.
    let ctx = randn(&[2, 3, 8], &mut rng);
    let mut cross = CrossAttention {
        mha: mha.clone(),
        ctx: ctx.clone(),
    };
    gradcheck("cross-attention", &mut cross, &x, &r, 40);
    let loss = |m: &MultiheadAttention<f64>, c: &ArrayD<f64>| dot(&m.forward(&x, Some(c)).unwrap().0, &r);
    let (_, cache) = mha.forward(&x, Some(&ctx)).unwrap();
    let (_, dctx) = mha.backward(&cache, &r).unwrap();
    let dctx = dctx.unwrap();
    for i in 0..ctx.len() {
        let mut cp = ctx.clone();
        cp.as_slice_mut().unwrap()[i] += 1e-5;
        let mut cm = ctx.clone();
        cm.as_slice_mut().unwrap()[i] -= 1e-5;
        let num = (loss(&mha, &cp) - loss(&mha, &cm)) / 2e-5;
        assert!((num - dctx.as_slice().unwrap()[i]).abs() < 1e-7, "dctx[{i}]");
    }
}

#[test]
fn activation_and_upsample_gradients() {
    let mut rng = Rng::new(6);
    let x = randn(&[3, 7], &mut rng);
    let r = randn(&[3, 7], &mut rng);
    let mut silu = Free(|x: &ArrayD<f64>, r: Option<&ArrayD<f64>>| {
        let (y, c) = Silu.forward(x);
        let dx = r
            .map(|r| Silu.backward(&c, r).unwrap())
            .unwrap_or_else(|| y.clone());
        (y, dx)
    });
    gradcheck("silu", &mut silu, &x, &r, 21);
    let mut gelu = Free(|x: &ArrayD<f64>, r: Option<&ArrayD<f64>>| {
        let (y, c) = Gelu.forward(x);
        let dx = r
            .map(|r| Gelu.backward(&c, r).unwrap())
            .unwrap_or_else(|| y.clone());
        (y, dx)
    });
    gradcheck("gelu", &mut gelu, &x, &r, 21);
    // tanh-GELU closed form at a few points.
    let pts = ArrayD::from_shape_vec(IxDyn(&[3]), vec![-1.5, 0.0, 2.0]).unwrap();
    let (y, _) = Gelu.forward(&pts);
    for (&v, &g) in pts.iter().zip(y.iter()) {
        let want =
            0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh());
        assert!((g - want).abs() < 1e-15);
    }
    for shape in [&[2, 3, 4][..], &[1, 2, 3, 2], &[1, 2, 2, 2, 3]] {
        let x = randn(shape, &mut rng);
        let up = Upsample { factor: 2 };
        let y = up.forward(&x).unwrap();
        let r = randn(y.shape(), &mut rng);
        let s = x.shape().to_vec();
        let mut u = Free(move |x: &ArrayD<f64>, r: Option<&ArrayD<f64>>| {
            let y = up.forward(x).unwrap();
            let dx = r
                .map(|r| up.backward(&s, r).unwrap())
                .unwrap_or_else(|| x.clone());
            (y, dx)
        });
        gradcheck("upsample", &mut u, &x, &r, 20);
    }
}

/// Whole models through the `Network` trait.
struct Net<N>(N, Vec<f64>);
impl<N: Parameters<f64>> Parameters<f64> for Net<N> {
    fn visit(&self, f: &mut dyn FnMut(&str, &diffusion_nn::Param<f64>)) {
        self.0.visit(f)
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut diffusion_nn::Param<f64>)) {
        self.0.visit_mut(f)
    }
}
impl<N: Network<f64>> Check for Net<N> {
    fn loss(&self, x: &ArrayD<f64>, r: &ArrayD<f64>) -> f64 {
        dot(&self.0.infer(x, &self.1, None).unwrap(), r)
    }
    fn grad(&mut self, x: &ArrayD<f64>, r: &ArrayD<f64>) -> ArrayD<f64> {
        let (_, c) = self.0.forward(x, &self.1, None).unwrap();
        self.0.backward(&c, r).unwrap()
    }
}

/// Random non-zero values everywhere (adaLN-Zero layers start at zero otherwise).
fn perturb<N: Parameters<f64>>(n: &mut N, rng: &mut Rng, s: f64) {
    n.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += s * rng.normal()));
}

/// A batch gives every item the output and input gradient it gets alone, and parameter
/// gradients that are the sums of the single items' (f64, to rounding): the check for
/// networks that split a batch into blocks or tasks.
fn assert_items_independent<N: Network<f64>>(net: &mut N, x: &ArrayD<f64>, dy: &ArrayD<f64>, t: &[f64]) {
    let grads = |net: &N| {
        let mut g = Vec::new();
        net.visit(&mut |_, p| g.extend(p.grad.iter().copied()));
        g
    };
    let item = |a: &ArrayD<f64>, i: usize| a.slice_axis(Axis(0), Slice::from(i..i + 1)).to_owned();
    net.zero_grad();
    let (y, cache) = net.forward(x, t, None).unwrap();
    let dx = net.backward(&cache, dy).unwrap();
    let want = grads(net);
    let mut summed = vec![0.0; want.len()];
    let mut worst = 0.0f64;
    for i in 0..t.len() {
        net.zero_grad();
        let (yi, ci) = net.forward(&item(x, i), &t[i..i + 1], None).unwrap();
        let dxi = net.backward(&ci, &item(dy, i)).unwrap();
        for (a, b) in yi
            .iter()
            .zip(item(&y, i).iter())
            .chain(dxi.iter().zip(item(&dx, i).iter()))
        {
            worst = worst.max((a - b).abs());
        }
        for (s, g) in summed.iter_mut().zip(grads(net)) {
            *s += g;
        }
    }
    assert!(
        worst < 1e-12,
        "items' outputs or input gradients differ by {worst:e}"
    );
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = want
        .iter()
        .zip(&summed)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err < 1e-11 * scale.max(1.0),
        "parameter gradients differ by {err:e} (max {scale:e})"
    );
}

/// The MLP runs its batch in row blocks (512 rows each): a batch of several blocks, the
/// last one partial.
#[test]
fn mlp_row_blocks_match_single_rows() {
    let mut rng = Rng::new(8);
    let cfg = MlpConfig {
        dim: 3,
        hidden: 16,
        depth: 2,
        temb: 8,
    };
    let mut net = MlpDenoiser::<f64>::new(cfg, &mut rng).unwrap();
    let batch = 600;
    let x = randn(&[batch, 3], &mut rng);
    let dy = randn(&[batch, 3], &mut rng);
    let t: Vec<f64> = (0..batch).map(|i| ((i * 37) % 50) as f64).collect();
    assert_items_independent(&mut net, &x, &dy, &t);
}

/// The DiT runs its MLP branch in tasks of `batch / 8` items (1 to 8): 19 items make tasks
/// of 2, the last one partial.
#[test]
fn dit_items_are_independent() {
    let mut rng = Rng::new(5);
    let cfg = DitConfig {
        depth: 1,
        hidden: 48,
        ..DitConfig::default()
    };
    let mut dit = Dit::<f64>::new(cfg, &mut rng).unwrap();
    // Non-zero adaLN and output weights, so every branch contributes.
    dit.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += 0.05 * rng.normal()));
    let x = randn(&[19, 4, 16, 16], &mut rng);
    let dy = randn(&[19, 4, 16, 16], &mut rng);
    let t: Vec<f64> = (0..19).map(|i| (i * 53) as f64).collect();
    assert_items_independent(&mut dit, &x, &dy, &t);
}

#[test]
fn mlp_end_to_end_gradients() {
    let mut rng = Rng::new(7);
    let cfg = MlpConfig {
        dim: 3,
        hidden: 8,
        depth: 2,
        temb: 6,
    };
    let net = MlpDenoiser::<f64>::new(cfg, &mut rng).unwrap();
    let x = randn(&[4, 3], &mut rng);
    let r = randn(&[4, 3], &mut rng);
    gradcheck(
        "mlp",
        &mut Net(net.clone(), vec![1.0, 10.0, 100.0, 999.0]),
        &x,
        &r,
        12,
    );
    // Repeated timesteps: the first layer projects (and back-propagates into) each distinct
    // embedding row once.
    let x = randn(&[5, 3], &mut rng);
    let r = randn(&[5, 3], &mut rng);
    let t = vec![10.0, 999.0, 10.0, 10.0, 999.0];
    gradcheck("mlp, repeated t", &mut Net(net, t), &x, &r, 12);
    // Above 32 input dimensions, x's part of the first layer runs as products instead of
    // direct loops, forward and backward.
    let cfg = MlpConfig {
        dim: 33,
        hidden: 8,
        depth: 1,
        temb: 6,
    };
    let net = MlpDenoiser::<f64>::new(cfg, &mut rng).unwrap();
    let x = randn(&[3, 33], &mut rng);
    let r = randn(&[3, 33], &mut rng);
    gradcheck("mlp, dim 33", &mut Net(net, vec![5.0, 5.0, 70.0]), &x, &r, 12);
}

#[test]
fn dit_end_to_end_gradients() {
    let mut rng = Rng::new(8);
    let cfg = DitConfig {
        in_ch: 2,
        size: 4,
        patch: 2,
        hidden: 8,
        depth: 2,
        heads: 2,
        mlp_ratio: 2,
        freq_dim: 6,
        num_classes: 0,
    };
    let mut net = Dit::<f64>::new(cfg, &mut rng).unwrap();
    perturb(&mut net, &mut rng, 0.3);
    let x = randn(&[2, 2, 4, 4], &mut rng);
    let r = randn(&[2, 2, 4, 4], &mut rng);
    gradcheck("dit", &mut Net(net, vec![3.0, 500.0]), &x, &r, 8);
}

#[test]
fn unet_end_to_end_gradients_2d_3d_and_scaled_skips() {
    let mut rng = Rng::new(9);
    for (dims, size, scaling) in [
        (2, 4, SkipScaling::None),
        (2, 4, SkipScaling::Learnable(0.7)),
        (3, 2, SkipScaling::Constant(0.8)),
        (1, 4, SkipScaling::None),
    ] {
        let cfg = UNetConfig {
            in_ch: 2,
            size,
            dims,
            base: 4,
            mults: vec![1, 2],
            nres: 1,
            temb: 6,
            attn_levels: vec![1],
            heads: 2,
            groups: 2,
            skip_scaling: scaling.clone(),
        };
        let mut net = UNet::<f64>::new(cfg, &mut rng).unwrap();
        perturb(&mut net, &mut rng, 0.1);
        let mut shape = vec![2, 2];
        shape.extend(std::iter::repeat_n(size, dims));
        let x = randn(&shape, &mut rng);
        let r = randn(&shape, &mut rng);
        gradcheck(
            &format!("unet{dims}d {scaling:?}"),
            &mut Net(net, vec![5.0, 700.0]),
            &x,
            &r,
            6,
        );
    }
}

simple_check!(
    SubspaceAttention<f64>,
    |s, x| s.forward(x).unwrap().0,
    |s, x, r| {
        let (_, c) = s.forward(x).unwrap();
        s.backward(&c, r).unwrap()
    }
);
simple_check!(IstaBlock<f64>, |s, x| s.forward(x).unwrap().0, |s, x, r| {
    let (_, c) = s.forward(x).unwrap();
    s.backward(&c, r).unwrap()
});

#[test]
fn crate_block_gradients() {
    let mut rng = Rng::new(10);
    let mut mssa = SubspaceAttention::<f64>::new(6, 2, 3, &mut rng).unwrap();
    let x = randn(&[2, 4, 6], &mut rng);
    let r = randn(&[2, 4, 6], &mut rng);
    gradcheck("mssa", &mut mssa, &x, &r, 30);
    // lambda = 0 with a small step keeps most pre-activations away from the ReLU kink.
    let mut ista = IstaBlock::<f64>::new(6, 0.1, 0.05, &mut rng);
    let x = randn(&[2, 4, 6], &mut rng).mapv(|v: f64| v.abs() + 0.5);
    gradcheck("ista", &mut ista, &x, &r, 30);
}

#[test]
fn ista_matches_closed_form() {
    // Oracle: relu(x + eta (x D - x D^T D) - eta lambda) evaluated with ndarray's dot.
    let mut rng = Rng::new(11);
    let ista = IstaBlock::<f64>::new(5, 0.3, 0.1, &mut rng);
    let x = randn(&[3, 5], &mut rng);
    let y = ista.forward(&x).unwrap().0;
    let x2 = x.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    let d = ista
        .weight
        .value
        .clone()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let want = (&x2 + &((x2.dot(&d) - x2.dot(&d.t()).dot(&d)) * 0.3) - 0.03).mapv(|v| v.max(0.0));
    for (a, b) in y.iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn whitebox_dit_end_to_end_gradients() {
    let mut rng = Rng::new(10);
    let cfg = WhiteBoxDitConfig {
        in_ch: 2,
        size: 4,
        patch: 2,
        hidden: 8,
        depth: 2,
        heads: 2,
        freq_dim: 6,
        num_classes: 0,
        ista_step: 0.3,
        ista_lambda: 0.1,
    };
    let mut net = WhiteBoxDit::<f64>::new(cfg, &mut rng).unwrap();
    perturb(&mut net, &mut rng, 0.3);
    let x = randn(&[2, 2, 4, 4], &mut rng);
    let r = randn(&[2, 2, 4, 4], &mut rng);
    gradcheck("whitebox-dit", &mut Net(net, vec![3.0, 500.0]), &x, &r, 8);
}
