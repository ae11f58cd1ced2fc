//! Quick sgemm throughput probe: the crate's tiled GEMM vs gemm's own rayon split.
//! `cargo run --release -p diffusion-nn --example sgemm_probe`
use std::time::Instant;

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .unwrap();
    let n = 1024;
    let a = ndarray::Array2::<f32>::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1);
    let b = a.t().as_standard_layout().into_owned();
    let flops = 2.0 * (n * n * n) as f64;
    for _ in 0..3 {
        let t = Instant::now();
        let reps = 10;
        for _ in 0..reps {
            std::hint::black_box(diffusion_nn::matmul_2d(&a, &b).unwrap());
        }
        let (av, bv) = (a.as_slice().unwrap(), b.as_slice().unwrap());
        let mut c = vec![0f32; n * n];
        for (label, par) in [
            ("gemm single", gemm::Parallelism::None),
            ("gemm rayon(2)", gemm::Parallelism::Rayon(2)),
        ] {
            let t0 = Instant::now();
            for _ in 0..reps {
                direct(av, bv, &mut c, n, par);
            }
            println!(
                "{label}: {:.1} GFLOP/s",
                flops * reps as f64 / t0.elapsed().as_secs_f64() / 1e9
            );
        }
        println!(
            "crate matmul: {:.1} GFLOP/s",
            flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
        );
    }
}

#[allow(dead_code)]
fn direct(a: &[f32], b: &[f32], c: &mut [f32], n: usize, par: gemm::Parallelism) {
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
