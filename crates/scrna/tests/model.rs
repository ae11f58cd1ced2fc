//! Gene-patch layout, and end-to-end label-conditional training and guided sampling on a
//! small synthetic two-type population (each model family, seeded).

use diffusion_core::Rng;
use diffusion_nn::Network;
use diffusion_scrna::ScrnaError;
use diffusion_scrna::model::*;
use ndarray::Array2;

#[test]
fn layout_places_gene_patches_as_tokens() {
    let l = GeneLayout::new(10, 3).unwrap();
    assert_eq!((l.grid, l.tokens()), (2, 4));
    let x = Array2::from_shape_fn((2, 10), |(c, g)| (100 * c + g) as f64);
    let img = l.to_images(&x).unwrap();
    assert_eq!(img.shape(), &[2, 3, 2, 2]);
    // Gene 4 is token 1 (grid cell (0, 1)), channel 1; gene 9 is token 3, channel 0.
    assert_eq!(img[[1, 1, 0, 1]], 104.0);
    assert_eq!(img[[0, 0, 1, 1]], 9.0);
    // Padding (token 3, channels 1 and 2) is zero.
    assert_eq!(img[[0, 2, 1, 1]], 0.0);
    assert_eq!(l.from_images(&img).unwrap(), x);
    assert!(l.to_images(&Array2::zeros((1, 9))).is_err());
    assert!(GeneLayout::new(0, 3).is_err());
}

/// Two cell types over 12 genes: type t has mean +-1.5 on genes of parity t.
fn two_types(n: usize, seed: u64) -> (Array2<f64>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let x = Array2::from_shape_fn((n, 12), |(c, g)| {
        let sign = if g % 2 == labels[c] { 1.5 } else { -1.5 };
        sign + 0.3 * rng.normal()
    });
    (x, labels)
}

fn check_conditional<N: Network<f32>>(net: N, cfg: &ModelConfig) {
    let layout = GeneLayout::new(12, 4).unwrap();
    let (x, labels) = two_types(256, 1);
    let opts = TrainOptions {
        steps: 250,
        batch: 64,
        lr: 3e-3,
        warmup: 20,
        seed: 2,
        p_uncond: 0.2,
        ema_decay: None,
    };
    let (net, report) = train(net, layout, &x, Some((&labels, 2)), &opts, |_| {}).unwrap();
    assert!(report.tail_loss < 0.5, "{report:?}");
    let want: Vec<usize> = (0..40).map(|i| i % 2).collect();
    let sopt = SampleOptions {
        steps: 20,
        guidance: 2.0,
        seed: 3,
    };
    let y = sample(&net, layout, 40, Some(&want), cfg.null_label(), &sopt).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    // Each sample's type by the sign pattern of its genes matches the requested label.
    let hits = y
        .rows()
        .into_iter()
        .zip(&want)
        .filter(|(r, t)| {
            let score: f64 = r
                .iter()
                .enumerate()
                .map(|(g, v)| if g % 2 == 0 { *v } else { -v })
                .sum();
            usize::from(score < 0.0) == **t
        })
        .count();
    assert!(hits >= 36, "{hits} of 40 samples have the requested type");
    // Unconditional draws (the "no label" class) and bad label counts.
    let u = sample(&net, layout, 5, None, cfg.null_label(), &sopt).unwrap();
    assert_eq!(u.dim(), (5, 12));
    let e = sample(&net, layout, 5, Some(&[0, 1]), cfg.null_label(), &sopt).unwrap_err();
    assert!(
        matches!(
            e,
            ScrnaError::Length {
                expected: 5,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn white_box_learns_two_types_with_guidance() {
    let cfg = ModelConfig::new(Arch::WhiteBox, 32, 2, 2, 2);
    check_conditional(white_box(GeneLayout::new(12, 4).unwrap(), &cfg, 4).unwrap(), &cfg);
}

#[test]
fn standard_dit_learns_two_types_with_guidance() {
    let cfg = ModelConfig::new(Arch::Standard, 32, 2, 2, 2);
    check_conditional(standard(GeneLayout::new(12, 4).unwrap(), &cfg, 4).unwrap(), &cfg);
}

#[test]
fn training_rejects_labels_out_of_range() {
    let cfg = ModelConfig::new(Arch::WhiteBox, 16, 1, 2, 2);
    let layout = GeneLayout::new(12, 4).unwrap();
    let net = white_box(layout, &cfg, 1).unwrap();
    let (x, _) = two_types(8, 1);
    let bad = vec![0, 1, 2, 0, 1, 0, 1, 0];
    let opts = TrainOptions {
        steps: 2,
        warmup: 1,
        ..TrainOptions::default()
    };
    assert!(train(net.clone(), layout, &x, Some((&bad, 2)), &opts, |_| {}).is_err());
    assert!(train(net, layout, &x, Some((&bad[..3], 2)), &opts, |_| {}).is_err());
}
