//! `diffusion-nn`'s CRATE blocks and white-box DiT against a direct, loop-level evaluation
//! of the formulas (Yu et al. 2023; DiT's adaLN-Zero skeleton, Peebles & Xie 2023), in f64
//! with every parameter random (the zero-initialised adaLN and output layers included).

use std::collections::HashMap;

use diffusion_core::Rng;
use diffusion_nn::layers::{IstaBlock, SubspaceAttention};
use diffusion_nn::models::{WhiteBoxDit, WhiteBoxDitConfig};
use diffusion_nn::{Network, Parameters};
use ndarray::{ArrayD, IxDyn};

fn randn(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut v = vec![0.0; n];
    Rng::new(seed).fill_normal(&mut v);
    v.iter().map(|x| x * scale).collect()
}

fn randomize<M: Parameters<f64>>(m: &mut M, seed: u64, scale: f64) {
    let mut k = 0;
    m.visit_mut(&mut |_, p| {
        k += 1;
        let v = randn(p.value.len(), seed * 1000 + k, scale);
        p.value.iter_mut().zip(v).for_each(|(a, b)| *a = b);
    });
}

fn params<M: Parameters<f64>>(m: &M) -> HashMap<String, Vec<f64>> {
    let mut out = HashMap::new();
    m.visit(&mut |name, p| {
        out.insert(name.to_string(), p.value.iter().copied().collect());
    });
    out
}

/// `y[r] = W x[r] + b` for row-major `W: [out, inp]`.
fn linear(x: &[f64], w: &[f64], b: Option<&[f64]>, inp: usize, out: usize) -> Vec<f64> {
    let rows = x.len() / inp;
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = b.map_or(0.0, |b| b[o]);
            for i in 0..inp {
                s += w[o * inp + i] * x[r * inp + i];
            }
            y[r * out + o] = s;
        }
    }
    y
}

/// MSSA on tokens `[batch, n, dim]` by loops: per head k, `U = Z U_k^T`,
/// `P = softmax(U U^T / sqrt(d))`, `O_k = P U`; out = `W_out concat_k O_k + b`.
fn mssa(
    x: &[f64],
    batch: usize,
    n: usize,
    dim: usize,
    heads: usize,
    qkv: &[f64],
    wo: &[f64],
    bo: &[f64],
) -> Vec<f64> {
    let hd = dim / heads;
    let w = heads * hd;
    let mut o = vec![0.0; batch * n * w];
    for b in 0..batch {
        let z = &x[b * n * dim..(b + 1) * n * dim];
        let u = linear(z, qkv, None, dim, w);
        for k in 0..heads {
            for i in 0..n {
                let mut s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd)
                            .map(|e| u[i * w + k * hd + e] * u[j * w + k * hd + e])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|v| *v = (*v - mx).exp());
                let tot: f64 = s.iter().sum();
                for e in 0..hd {
                    o[(b * n + i) * w + k * hd + e] =
                        (0..n).map(|j| s[j] / tot * u[j * w + k * hd + e]).sum();
                }
            }
        }
    }
    linear(&o, wo, Some(bo), w, dim)
}

/// One ISTA step by loops: `r = x - x D^T`, `u = x + eta r D - eta lambda`, ReLU.
fn ista(x: &[f64], dim: usize, d: &[f64], eta: f64, lambda: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for r in 0..x.len() / dim {
        let xr = &x[r * dim..(r + 1) * dim];
        let res: Vec<f64> = (0..dim)
            .map(|j| xr[j] - (0..dim).map(|k| xr[k] * d[j * dim + k]).sum::<f64>())
            .collect();
        for i in 0..dim {
            let u = xr[i] + eta * (0..dim).map(|j| res[j] * d[j * dim + i]).sum::<f64>() - eta * lambda;
            y[r * dim + i] = u.max(0.0);
        }
    }
    y
}

fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// LayerNorm without affine (eps 1e-6, biased variance) of each `dim` row.
fn layer_norm(x: &[f64], dim: usize) -> Vec<f64> {
    x.chunks(dim)
        .flat_map(|r| {
            let m = r.iter().sum::<f64>() / dim as f64;
            let v = r.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / dim as f64;
            r.iter()
                .map(move |a| (a - m) / (v + 1e-6).sqrt())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn ista_with_zero_dictionary_is_a_shifted_relu() {
    let (eta, lambda) = (0.3, 0.7);
    let mut block = IstaBlock::<f64>::new(5, eta, lambda, &mut Rng::new(1));
    block.weight.value.fill(0.0);
    let x = randn(2 * 3 * 5, 2, 1.0);
    let xa = ArrayD::from_shape_vec(IxDyn(&[2, 3, 5]), x.clone()).unwrap();
    let (y, _) = block.forward(&xa).unwrap();
    for (got, v) in y.iter().zip(&x) {
        assert_eq!(*got, (v - eta * lambda).max(0.0));
    }
}

#[test]
fn ista_matches_loops() {
    let mut block = IstaBlock::<f64>::new(6, 0.2, 0.1, &mut Rng::new(3));
    randomize(&mut block, 4, 0.4);
    let x = randn(2 * 4 * 6, 5, 1.0);
    let (y, _) = block
        .forward(&ArrayD::from_shape_vec(IxDyn(&[2, 4, 6]), x.clone()).unwrap())
        .unwrap();
    let want = ista(&x, 6, block.weight.value.as_slice().unwrap(), 0.2, 0.1);
    for (a, b) in y.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

#[test]
fn mssa_matches_loops_and_is_permutation_equivariant() {
    let (batch, n, dim, heads) = (2, 5, 8, 2);
    let mut attn = SubspaceAttention::<f64>::new(dim, heads, dim / heads, &mut Rng::new(6)).unwrap();
    randomize(&mut attn, 7, 0.5);
    let p = params(&attn);
    let x = randn(batch * n * dim, 8, 1.0);
    let xa = ArrayD::from_shape_vec(IxDyn(&[batch, n, dim]), x.clone()).unwrap();
    let (y, _) = attn.forward(&xa).unwrap();
    let want = mssa(
        &x,
        batch,
        n,
        dim,
        heads,
        &p["qkv.weight"],
        &p["out.weight"],
        &p["out.bias"],
    );
    for (a, b) in y.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    // Permuting the tokens permutes the outputs the same way.
    let perm = [3, 0, 4, 1, 2];
    let mut xp = vec![0.0; x.len()];
    for b in 0..batch {
        for (i, &pi) in perm.iter().enumerate() {
            let (dst, src) = ((b * n + i) * dim, (b * n + pi) * dim);
            xp[dst..dst + dim].copy_from_slice(&x[src..src + dim]);
        }
    }
    let (yp, _) = attn
        .forward(&ArrayD::from_shape_vec(IxDyn(&[batch, n, dim]), xp).unwrap())
        .unwrap();
    for b in 0..batch {
        for (i, &pi) in perm.iter().enumerate() {
            for e in 0..dim {
                let (a, c) = (yp[[b, i, e]], y[[b, pi, e]]);
                assert!((a - c).abs() < 1e-12, "token {i} <- {pi}: {a} vs {c}");
            }
        }
    }
}

/// DiT's 2-d sin-cos table (`get_2d_sincos_pos_embed`): the first half of each row encodes
/// the column, the second the row; each half is `[sin(p w_k), cos(p w_k)]`, `w_k = 10000^(-k/(D/4))`.
fn pos_table(grid: usize, dim: usize) -> Vec<f64> {
    let q = dim / 4;
    let mut v = vec![0.0; grid * grid * dim];
    for i in 0..grid {
        for j in 0..grid {
            let row = &mut v[(i * grid + j) * dim..(i * grid + j + 1) * dim];
            for (half, coord) in [(0, j), (1, i)] {
                for k in 0..q {
                    let w = 10000f64.powf(-(k as f64) / q as f64);
                    row[half * 2 * q + k] = (coord as f64 * w).sin();
                    row[half * 2 * q + q + k] = (coord as f64 * w).cos();
                }
            }
        }
    }
    v
}

#[test]
fn white_box_dit_forward_matches_loops() {
    let cfg = WhiteBoxDitConfig {
        in_ch: 3,
        size: 2,
        patch: 1,
        hidden: 8,
        depth: 2,
        heads: 2,
        freq_dim: 6,
        num_classes: 4,
        ista_step: 0.15,
        ista_lambda: 0.05,
    };
    let mut net = WhiteBoxDit::<f64>::new(cfg, &mut Rng::new(9)).unwrap();
    randomize(&mut net, 10, 0.4);
    let p = params(&net);
    let (batch, c_in, s, d) = (2, cfg.in_ch, cfg.size, cfg.hidden);
    let tok = s * s;
    let x = randn(batch * c_in * tok, 11, 1.0);
    let t = [17.0, 640.0];
    let labels = [3usize, 1];
    let (y, _) = net
        .forward(
            &ArrayD::from_shape_vec(IxDyn(&[batch, c_in, s, s]), x.clone()).unwrap(),
            &t,
            Some(&labels),
        )
        .unwrap();

    let mut pos_nn = Vec::new();
    net.visit_buffers(&mut |name, b| {
        if name == "pos" {
            pos_nn = b.iter().copied().collect();
        }
    });
    let pos = pos_table(s, d);
    assert!(
        pos.iter().zip(&pos_nn).all(|(a, b)| (a - b).abs() < 1e-12),
        "positions"
    );

    let half = cfg.freq_dim / 2;
    for b in 0..batch {
        // Tokens: the 1x1 patch embedding of each pixel, plus its position.
        let mut h = vec![0.0; tok * d];
        for ti in 0..tok {
            for e in 0..d {
                let mut v = p["x_embed.bias"][e] + pos[ti * d + e];
                for c in 0..c_in {
                    v += p["x_embed.weight"][e * c_in + c] * x[(b * c_in + c) * tok + ti];
                }
                h[ti * d + e] = v;
            }
        }
        // Conditioning: t_embed(timestep features) + the label's row.
        let temb: Vec<f64> = (0..2 * half)
            .map(|f| {
                let w = (-(10000f64.ln()) * (f % half) as f64 / half as f64).exp();
                if f < half {
                    (t[b] * w).cos()
                } else {
                    (t[b] * w).sin()
                }
            })
            .collect();
        let z1: Vec<f64> = linear(
            &temb,
            &p["t_embed.0.weight"],
            Some(&p["t_embed.0.bias"]),
            2 * half,
            d,
        )
        .into_iter()
        .map(silu)
        .collect();
        let mut cvec = linear(&z1, &p["t_embed.2.weight"], Some(&p["t_embed.2.bias"]), d, d);
        for e in 0..d {
            cvec[e] += p["y_embed.weight"][labels[b] * d + e];
        }
        let sc: Vec<f64> = cvec.iter().map(|&v| silu(v)).collect();
        for blk in 0..cfg.depth {
            let name = |k: &str| format!("blocks.{blk}.{k}");
            let m = linear(
                &sc,
                &p[&name("ada.1.weight")],
                Some(&p[&name("ada.1.bias")]),
                d,
                6 * d,
            );
            let modulate = |xh: &[f64], shift: usize, scale: usize| -> Vec<f64> {
                (0..tok * d)
                    .map(|i| xh[i] * (1.0 + m[scale + i % d]) + m[shift + i % d])
                    .collect()
            };
            let u = modulate(&layer_norm(&h, d), 0, d);
            let a = mssa(
                &u,
                1,
                tok,
                d,
                cfg.heads,
                &p[&name("attn.qkv.weight")],
                &p[&name("attn.out.weight")],
                &p[&name("attn.out.bias")],
            );
            for i in 0..tok * d {
                h[i] += m[2 * d + i % d] * a[i];
            }
            let v = modulate(&layer_norm(&h, d), 3 * d, 4 * d);
            let z = ista(&v, d, &p[&name("ista.weight")], cfg.ista_step, cfg.ista_lambda);
            for i in 0..tok * d {
                h[i] += m[5 * d + i % d] * z[i];
            }
        }
        let mf = linear(&sc, &p["ada_f.1.weight"], Some(&p["ada_f.1.bias"]), d, 2 * d);
        let hn = layer_norm(&h, d);
        let w: Vec<f64> = (0..tok * d)
            .map(|i| hn[i] * (1.0 + mf[d + i % d]) + mf[i % d])
            .collect();
        let o = linear(&w, &p["out.weight"], Some(&p["out.bias"]), d, c_in);
        for ti in 0..tok {
            for c in 0..c_in {
                let got = y.as_slice().unwrap()[(b * c_in + c) * tok + ti];
                let want = o[ti * c_in + c];
                assert!(
                    (got - want).abs() < 1e-11 * want.abs().max(1.0),
                    "item {b} token {ti} ch {c}: {got} vs {want}"
                );
            }
        }
    }
}
