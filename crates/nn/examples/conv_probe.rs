//! Best-of-N timing of single convolution layers at the unet-small shapes (batch 16).
//! `RAYON_NUM_THREADS=2 cargo run --release -p diffusion-nn --example conv_probe`
mod common;

use common::best;

use diffusion_core::Rng;
use diffusion_nn::layers::Conv;
use ndarray::{ArrayD, IxDyn};

diffusion_nn::use_mimalloc!();

fn main() {
    diffusion_nn::alloc::keep_freed_memory();
    let mut rng = Rng::new(0);
    for (cin, cout, hw) in [
        (64, 64, 32),
        (128, 64, 32),
        (128, 128, 16),
        (256, 128, 16),
        (256, 128, 8),
    ] {
        let conv = Conv::<f32>::square(2, cin, cout, 3, 1, 1, &mut rng).unwrap();
        let n = 16 * cin * hw * hw;
        let x = ArrayD::from_shape_vec(
            IxDyn(&[16, cin, hw, hw]),
            (0..n).map(|i| ((i * 7) % 13) as f32 * 0.1).collect(),
        )
        .unwrap();
        let mut c2 = conv.clone();
        let (y, cache) = conv.forward(&x).unwrap();
        let fwd = best(20, || {
            std::hint::black_box(conv.apply(&x).unwrap());
        });
        let bwd = best(10, || {
            std::hint::black_box(c2.backward(&cache, &y).unwrap());
        });
        let gflop = 2.0 * (16 * cout * hw * hw * cin * 9) as f64 / 1e9;
        println!(
            "{cin:4} -> {cout:4} at {hw:2}x{hw:2}: forward {:6.2} ms ({:5.0} GFLOP/s)  backward {:6.2} ms ({:5.0} GFLOP/s)",
            fwd * 1e3,
            gflop / fwd,
            bwd * 1e3,
            2.0 * gflop / bwd
        );
    }
}
