//! The references against independent oracles: closed forms, identities and central finite
//! differences (f64, step 1e-5, so truncation error ~1e-10 and rounding ~1e-11).

use super::*;
use diffusion_core::Rng;

fn randn(seed: u64, len: usize) -> Vec<f64> {
    let mut z = vec![0.0; len];
    Rng::new(seed).fill_normal(&mut z);
    z
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central-difference gradient of the scalar `f` at `x`.
fn fd_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-5;
    (0..x.len())
        .map(|i| {
            let (mut p, mut m) = (x.to_vec(), x.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn activations_match_closed_forms() {
    // silu(1) = 1 / (1 + e^-1); gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) 1.044715)).
    assert!((silu(&[1.0])[0] - 0.731_058_578_630_004_9).abs() < 1e-15);
    let want = 0.5 * (1.0 + (1.044715 * (2.0 / std::f64::consts::PI).sqrt()).tanh());
    assert!((gelu_tanh(&[1.0])[0] - want).abs() < 1e-15);
    // The tanh approximation stays within 1e-3 of the exact erf GELU (known bound ~5e-4); at
    // x = -1 the exact value is -0.15865525393145707.
    assert!((gelu_tanh(&[-1.0])[0] + 0.158_655_253_931_457_07).abs() < 1e-3);
}

#[test]
fn activation_gradients_match_finite_differences() {
    let x = randn(1, 50).iter().map(|v| 3.0 * v).collect::<Vec<_>>();
    let w = randn(2, 50);
    for (name, fwd, bwd) in [
        (
            "silu",
            silu as fn(&[f64]) -> Vec<f64>,
            silu_bwd as fn(&[f64], &[f64]) -> Vec<f64>,
        ),
        ("gelu", gelu_tanh, gelu_tanh_bwd),
    ] {
        let fd = fd_grad(&x, |x| dot(&fwd(x), &w));
        assert_close(&bwd(&w, &x), &fd, 1e-8, name);
    }
}

fn gn_shape() -> GroupNormShape {
    GroupNormShape {
        n: 2,
        c: 6,
        s: 5,
        groups: 3,
    }
}

#[test]
fn group_norm_normalises_each_group() {
    let shape = gn_shape();
    let x: Vec<f64> = randn(3, shape.len()).iter().map(|v| 2.0 * v + 1.5).collect();
    let eps = 1e-5;
    let out = group_norm(&x, shape, None, None, eps);
    for (i, grp) in out.y.chunks(10).enumerate() {
        let mean = grp.iter().sum::<f64>() / 10.0;
        let var = grp.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0;
        // Closed form: var(xhat) = var / (var + eps) with var = 1 / rstd^2 - eps.
        let raw_var = 1.0 / out.rstd[i].powi(2) - eps;
        assert!(mean.abs() < 1e-12, "group {i} mean {mean}");
        assert!(
            (var - raw_var / (raw_var + eps)).abs() < 1e-12,
            "group {i} var {var}"
        );
    }
    assert!(shape.validate().is_ok());
    assert!(GroupNormShape { groups: 4, ..shape }.validate().is_err());
}

#[test]
fn group_norm_gradients_match_finite_differences() {
    let shape = gn_shape();
    let (x, w) = (randn(4, shape.len()), randn(5, shape.len()));
    let gamma: Vec<f64> = randn(6, shape.c).iter().map(|v| 1.0 + 0.3 * v).collect();
    let beta = randn(7, shape.c);
    let eps = 1e-3;
    let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&group_norm(x, shape, Some(g), Some(b), eps).y, &w);
    let grads = group_norm_bwd(&w, &x, shape, Some(&gamma), eps);
    assert_close(&grads.dx, &fd_grad(&x, |x| loss(x, &gamma, &beta)), 1e-7, "dx");
    assert_close(
        &grads.dgamma,
        &fd_grad(&gamma, |g| loss(&x, g, &beta)),
        1e-7,
        "dgamma",
    );
    assert_close(
        &grads.dbeta,
        &fd_grad(&beta, |b| loss(&x, &gamma, b)),
        1e-7,
        "dbeta",
    );
}

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let (rows, dim, eps) = (3, 7, 1e-5);
    let (x, w) = (randn(8, rows * dim), randn(9, rows * dim));
    let gamma = randn(10, dim);
    let beta = randn(11, dim);
    let loss = |x: &[f64], g: &[f64]| dot(&layer_norm(x, rows, dim, Some(g), Some(&beta), eps).y, &w);
    let grads = layer_norm_bwd(&w, &x, rows, dim, Some(&gamma), eps);
    assert_close(&grads.dx, &fd_grad(&x, |x| loss(x, &gamma)), 1e-7, "dx");
    assert_close(&grads.dgamma, &fd_grad(&gamma, |g| loss(&x, g)), 1e-7, "dgamma");
    let sums: Vec<f64> = (0..dim)
        .map(|d| (0..rows).map(|r| w[r * dim + d]).sum())
        .collect();
    assert_close(&grads.dbeta, &sums, 1e-14, "dbeta");
}

#[test]
fn softmax_rows_sum_to_one_and_gradient_matches() {
    let (cols, scale) = (9, 0.7);
    let x = randn(12, 4 * cols);
    let y = softmax(&x, cols, scale);
    for row in y.chunks(cols) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-14);
    }
    // Shifting a row by a constant leaves it unchanged; huge logits do not overflow.
    let shifted: Vec<f64> = x.iter().map(|v| v + 1000.0).collect();
    assert_close(&softmax(&shifted, cols, scale), &y, 1e-12, "shift");
    let w = randn(13, x.len());
    let fd = fd_grad(&x, |x| dot(&softmax(x, cols, scale), &w));
    assert_close(&softmax_bwd(&w, &y, cols, scale), &fd, 1e-8, "softmax dx");
}

#[test]
fn gemm_agrees_with_transposes_and_matvec() {
    let (batch, m, k, n) = (2, 3, 4, 5);
    let (a, b) = (randn(14, batch * m * k), randn(15, batch * k * n));
    let c = gemm_batched(&a, &b, batch, (m, k, n), false, false);
    // (A B) x computed as A (B x) with hand-written mat-vecs.
    let x = randn(16, n);
    for p in 0..batch {
        let bx: Vec<f64> = (0..k)
            .map(|l| (0..n).map(|j| b[p * k * n + l * n + j] * x[j]).sum())
            .collect();
        let abx: Vec<f64> = (0..m)
            .map(|i| (0..k).map(|l| a[p * m * k + i * k + l] * bx[l]).sum())
            .collect();
        let cx: Vec<f64> = (0..m)
            .map(|i| (0..n).map(|j| c[p * m * n + i * n + j] * x[j]).sum())
            .collect();
        assert_close(&cx, &abx, 1e-13, "ABx");
    }
    // Transposed storage gives the same product.
    let transpose = |src: &[f64], r: usize, cl: usize| -> Vec<f64> {
        let mut t = vec![0.0; src.len()];
        for p in 0..batch {
            for i in 0..r {
                for j in 0..cl {
                    t[p * r * cl + j * r + i] = src[p * r * cl + i * cl + j];
                }
            }
        }
        t
    };
    let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
    assert_close(
        &gemm_batched(&at, &bt, batch, (m, k, n), true, true),
        &c,
        1e-14,
        "AtBt",
    );
}

#[test]
fn attention_closed_forms() {
    let (bh, lq, lk, d) = (2, 3, 4, 8);
    let (k, v) = (randn(17, bh * lk * d), randn(18, bh * lk * d));
    // q = 0: uniform weights, every output row is the mean of the value rows.
    let out = attention(&vec![0.0; bh * lq * d], &k, &v, bh, lq, lk, d);
    for p in 0..bh {
        for i in 0..lq {
            for j in 0..d {
                let mean = (0..lk).map(|r| v[(p * lk + r) * d + j]).sum::<f64>() / lk as f64;
                assert!((out[(p * lq + i) * d + j] - mean).abs() < 1e-14);
            }
        }
    }
    // One key: the output is that value row whatever q is.
    let q = randn(19, bh * lq * d);
    let out = attention(&q, &k[..bh * d], &v[..bh * d], bh, lq, 1, d);
    for p in 0..bh {
        for i in 0..lq {
            assert_close(&out[(p * lq + i) * d..][..d], &v[p * d..][..d], 1e-14, "one key");
        }
    }
}

fn geometry() -> ConvGeometry {
    ConvGeometry {
        n: 2,
        c: 3,
        h: 7,
        w: 6,
        kh: 3,
        kw: 2,
        stride: 2,
        pad: 1,
        dilation: 2,
    }
}

#[test]
fn im2col_times_weights_is_a_direct_convolution() {
    let g = geometry();
    let (oh, ow) = g.output_hw().unwrap();
    let x = randn(20, g.image_len());
    let out_c = 4;
    let wts = randn(21, out_c * g.c * g.kh * g.kw);
    let cols = im2col(&x, g).unwrap();
    let krows = g.c * g.kh * g.kw;
    for n in 0..g.n {
        let y = gemm_batched(
            &wts,
            &cols[n * krows * oh * ow..],
            1,
            (out_c, krows, oh * ow),
            false,
            false,
        );
        for o in 0..out_c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut direct = 0.0;
                    for c in 0..g.c {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride + ky * g.dilation) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx * g.dilation) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                                    continue;
                                }
                                let xv = x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                direct += wts[((o * g.c + c) * g.kh + ky) * g.kw + kx] * xv;
                            }
                        }
                    }
                    assert!((y[(o * oh + oy) * ow + ox] - direct).abs() < 1e-12);
                }
            }
        }
    }
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    let g = geometry();
    let x = randn(22, g.image_len());
    let c = randn(23, g.cols_len().unwrap());
    let lhs = dot(&im2col(&x, g).unwrap(), &c);
    let rhs = dot(&x, &col2im(&c, g).unwrap());
    assert!((lhs - rhs).abs() < 1e-11 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    let too_big = ConvGeometry { kh: 20, ..g };
    assert!(matches!(
        too_big.output_hw(),
        Err(CudaError::InvalidArgument { .. })
    ));
}

#[test]
fn adaln_gradients_match_finite_differences() {
    let (b, l, d) = (2, 3, 4);
    let (x, w) = (randn(24, b * l * d), randn(25, b * l * d));
    let (shift, scale) = (randn(26, b * d), randn(27, b * d));
    let loss = |x: &[f64], sh: &[f64], sc: &[f64]| dot(&adaln_modulate(x, sh, sc, b, l, d), &w);
    let (dx, dshift, dscale) = adaln_modulate_bwd(&w, &x, &scale, b, l, d);
    assert_close(&dx, &fd_grad(&x, |x| loss(x, &shift, &scale)), 1e-8, "dx");
    assert_close(&dshift, &fd_grad(&shift, |s| loss(&x, s, &scale)), 1e-8, "dshift");
    assert_close(&dscale, &fd_grad(&scale, |s| loss(&x, &shift, s)), 1e-8, "dscale");
}

#[test]
fn attention_gradients_match_finite_differences() {
    let (bh, lq, lk, d) = (2, 3, 4, 5);
    let (q, k, v) = (
        randn(28, bh * lq * d),
        randn(29, bh * lk * d),
        randn(30, bh * lk * d),
    );
    let w = randn(31, bh * lq * d);
    let loss = |q: &[f64], k: &[f64], v: &[f64]| dot(&attention(q, k, v, bh, lq, lk, d), &w);
    let (dq, dk, dv) = attention_bwd(&w, &q, &k, &v, bh, lq, lk, d);
    assert_close(&dq, &fd_grad(&q, |q| loss(q, &k, &v)), 1e-8, "dq");
    assert_close(&dk, &fd_grad(&k, |k| loss(&q, k, &v)), 1e-8, "dk");
    assert_close(&dv, &fd_grad(&v, |v| loss(&q, &k, v)), 1e-8, "dv");
}

#[test]
fn gate_add_gradients_match_finite_differences() {
    let (b, l, d) = (2, 3, 4);
    let (h, f, w) = (randn(32, b * l * d), randn(33, b * l * d), randn(34, b * l * d));
    let gate = randn(35, b * d);
    let loss = |f: &[f64], g: &[f64]| dot(&gate_add(&h, f, g, b, l, d), &w);
    let (df, dgate) = gate_add_bwd(&w, &f, &gate, b, l, d);
    assert_close(&df, &fd_grad(&f, |f| loss(f, &gate)), 1e-8, "df");
    assert_close(&dgate, &fd_grad(&gate, |g| loss(&f, g)), 1e-8, "dgate");
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let g = ConvGeometry {
        n: 2,
        c: 3,
        h: 5,
        w: 4,
        kh: 3,
        kw: 3,
        stride: 2,
        pad: 1,
        dilation: 1,
    };
    let cout = 2;
    let (oh, ow) = g.output_hw().unwrap();
    let kk = g.c * g.kh * g.kw;
    let (x, wt, bias) = (randn(40, g.image_len()), randn(41, cout * kk), randn(42, cout));
    let dy = randn(43, g.n * cout * oh * ow);
    let loss = |x: &[f64], wt: &[f64], b: &[f64]| dot(&conv2d(x, wt, b, g, cout).unwrap(), &dy);
    let (dx, dw, db) = conv2d_bwd(&x, &wt, &dy, g, cout).unwrap();
    assert_close(&dx, &fd_grad(&x, |x| loss(x, &wt, &bias)), 1e-8, "conv dx");
    assert_close(&dw, &fd_grad(&wt, |w| loss(&x, w, &bias)), 1e-8, "conv dweight");
    assert_close(&db, &fd_grad(&bias, |b| loss(&x, &wt, b)), 1e-8, "conv dbias");
}

#[test]
fn upsample_and_split_are_the_adjoints_of_their_forwards() {
    let (planes, h, w) = (3, 2, 5);
    let (x, d) = (randn(44, planes * h * w), randn(45, planes * 4 * h * w));
    let lhs = dot(&upsample2(&x, planes, h, w), &d);
    let rhs = dot(&x, &upsample2_bwd(&d, planes, h, w));
    assert!(
        (lhs - rhs).abs() < 1e-12 * lhs.abs().max(1.0),
        "upsample2: {lhs} vs {rhs}"
    );
    let (n, ca, cb, s, scale) = (2, 3, 4, 5, 0.7);
    let (a, b) = (randn(46, n * ca * s), randn(47, n * cb * s));
    let d = randn(48, n * (ca + cb) * s);
    let (da, db) = split_channels(&d, n, ca, cb, s, scale);
    let lhs = dot(&concat_channels(&a, &b, n, ca, cb, s, scale), &d);
    let rhs = dot(&a, &da) + dot(&b, &db);
    assert!(
        (lhs - rhs).abs() < 1e-12 * lhs.abs().max(1.0),
        "concat: {lhs} vs {rhs}"
    );
    let sums = channel_sums(&d, n, ca + cb, s);
    let total: f64 = d.iter().sum();
    assert!((sums.iter().sum::<f64>() - total).abs() < 1e-12 * total.abs().max(1.0));
    assert_close(
        &batch_sums(&d, n, (ca + cb) * s),
        &channel_sums(&d, n, (ca + cb) * s, 1),
        1e-15,
        "sums",
    );
}
