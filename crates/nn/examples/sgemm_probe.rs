//! sgemm throughput probe on the shapes the reference models use: the crate's GEMM vs the
//! `gemm` crate called directly (single thread and its own rayon split). Best-of-N timing,
//! so a machine shared with other work still gives a usable upper bound.
//! `RAYON_NUM_THREADS=2 cargo run --release -p diffusion-nn --example sgemm_probe`
mod common;

use common::best;

fn main() {
    // (label, m, n, k, a transposed, b transposed)
    let shapes = [
        ("square 1024", 1024, 1024, 1024, false, false),
        ("dit mlp0 fwd 4096x768x192", 4096, 768, 192, false, true),
        ("dit mlp2 fwd 4096x192x768", 4096, 192, 768, false, true),
        ("dit dW mlp0 768x192x4096", 768, 192, 4096, true, false),
        ("dit qkv fwd 4096x576x192", 4096, 576, 192, false, true),
        ("mlp fwd 4096x256x256", 4096, 256, 256, false, true),
        ("mlp dW 256x256x4096", 256, 256, 4096, true, false),
        ("attn 64x64x64", 64, 64, 64, false, true),
        ("unet conv0 tile 455x64x576", 455, 64, 576, false, true),
        ("unet conv0 item 1024x64x576", 1024, 64, 576, false, true),
        ("unet conv0 W^T 64x1024x576", 64, 1024, 576, false, true),
        ("unet conv1 tile 227x128x1152", 227, 128, 1152, false, true),
        ("unet conv1 item 256x128x1152", 256, 128, 1152, false, true),
        ("conv0 y^T tile 455x64x576", 455, 64, 576, true, true),
        ("conv0 y^T item 1024x64x576", 1024, 64, 576, true, true),
        ("conv1 y^T tile 227x128x1152", 227, 128, 1152, true, true),
        ("conv0 y tile 64x455x576", 64, 455, 576, false, false),
        ("conv1 y tile 128x227x1152", 128, 227, 1152, false, false),
    ];
    for (label, m, n, k, at, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 11) as f32 * 0.1).collect();
        let (ars, acs) = if at { (1, m) } else { (k, 1) };
        let (brs, bcs) = if bt { (1, k) } else { (n, 1) };
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let reps = (2e10 / flops).clamp(5.0, 200.0) as usize;
        let mut line = format!("{label:28}");
        for (name, par) in [
            ("gemm-1", gemm::Parallelism::None),
            ("gemm-rayon", gemm::Parallelism::Rayon(0)),
        ] {
            let s = best(reps, || unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    acs as isize,
                    ars as isize,
                    b.as_ptr(),
                    bcs as isize,
                    brs as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            });
            line += &format!(" {name} {:6.1}", flops / s / 1e9);
        }
        let a2 = ndarray::Array2::from_shape_vec(if at { (k, m) } else { (m, k) }, a.clone()).unwrap();
        let b2 = ndarray::Array2::from_shape_vec(if bt { (n, k) } else { (k, n) }, b.clone()).unwrap();
        let (av, bv) = (
            if at { a2.t() } else { a2.view() },
            if bt { b2.t() } else { b2.view() },
        );
        // ndarray's `dot` is matrixmultiply (AVX2/FMA kernels, no AVX-512), single thread.
        let s = best(reps, || {
            std::hint::black_box(av.dot(&bv));
        });
        line += &format!(" mm-1 {:6.1}", flops / s / 1e9);
        for (name, split) in [
            ("auto", None),
            ("m4", Some((4, 1))),
            ("n4", Some((1, 4))),
            ("m8", Some((8, 1))),
            ("n8", Some((1, 8))),
        ] {
            let s = best(reps, || diffusion_nn::probe_matmul_split(&mut c, av, bv, split));
            line += &format!(" {name} {:6.1}", flops / s / 1e9);
        }
        println!("{line}");
    }
}
