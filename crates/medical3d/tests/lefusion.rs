//! LeFusion pieces: lesion-focused loss, histogram condition, RePaint lesion inpainting.

use diffusion_core::{NoiseLevel, Parameterization, Rng, denoiser_fn};
use diffusion_medical3d::*;
use diffusion_solvers::{RePaint, Scheduler};
use ndarray::{ArrayD, IxDyn};

fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

#[test]
fn lesion_loss_counts_only_the_lesion() {
    let p = arr(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]);
    let t = arr(&[1, 4], vec![0.0, 0.0, 3.0, 2.0]);
    let m = arr(&[1, 4], vec![1.0, 0.0, 0.0, 1.0]);
    // (1^2 + 2^2) / 2
    assert_eq!(lesion_loss(&p, &t, &m).unwrap(), 2.5);
    // All-ones mask: the full-volume loss (1 + 4 + 0 + 4) / 4.
    assert_eq!(lesion_loss(&p, &t, &arr(&[1, 4], vec![1.0; 4])).unwrap(), 2.25);
    // Background errors do not move it.
    let t2 = arr(&[1, 4], vec![0.0, 50.0, -9.0, 2.0]);
    assert_eq!(lesion_loss(&p, &t2, &m).unwrap(), 2.5);
    assert!(
        lesion_loss(&p, &t, &arr(&[1, 4], vec![0.0; 4])).is_err(),
        "empty mask"
    );
    assert!(
        lesion_loss(&p, &t, &arr(&[4, 1], vec![1.0; 4])).is_err(),
        "mask of another shape"
    );
    assert!(
        lesion_loss(&p, &t, &arr(&[1, 4], vec![0.5; 4])).is_err(),
        "non-binary mask"
    );
}

#[test]
fn histogram_matches_torch_histc_by_hand() {
    // Bins of width 0.125 on [-1, 1]: -1 -> 0, -0.875 -> 1, 0 -> 8, 0.99 -> 15, 1 -> 15
    // (histc puts the maximum in the last bin); 5.0 is outside and ignored; the masked-out
    // voxel does not count.
    let img = arr(&[7], vec![-1.0, -0.875, 0.0, 0.99, 1.0, 5.0, 0.3]);
    let m = arr(&[7], vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    let h = lesion_histogram(&img, &m).unwrap();
    let mut want = [0.0; 16];
    want[0] = 1.0 / 6.0;
    want[1] = 1.0 / 6.0;
    want[8] = 1.0 / 6.0;
    want[15] = 2.0 / 6.0;
    assert_eq!(h, want);
}

#[test]
fn repaint_inpainting_keeps_the_background_and_fills_the_lesion() {
    // An exact epsilon model of data concentrated at 0.2 everywhere: the lesion converges
    // to 0.2; the background must come back bit for bit.
    let model = denoiser_fn(Parameterization::Epsilon, |x: &ArrayD<f32>, l: NoiseLevel| {
        Ok(x.mapv(|v| ((f64::from(v) - l.alpha * 0.2) / l.sigma) as f32))
    });
    let shape = [1, 1, 4, 6, 6];
    let background = ArrayD::from_shape_fn(IxDyn(&shape), |ix| (ix[3] as f32 - ix[4] as f32) * 0.1);
    let lesion = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
        if (1..3).contains(&ix[2]) && (2..4).contains(&ix[3]) && (2..5).contains(&ix[4]) {
            1.0
        } else {
            0.0
        }
    });
    let mut s = RePaint::from_json(&serde_json::json!({"eta": 1.0})).unwrap();
    s.set_timesteps_jump(25, 5, 2).unwrap();
    let mut rng = Rng::new(3);
    let out = inpaint_lesion(&mut s, &model, &background, &lesion, &mut rng).unwrap();
    for ((o, b), m) in out.iter().zip(background.iter()).zip(lesion.iter()) {
        if *m == 0.0 {
            assert_eq!(o, b);
        } else {
            assert!((o - 0.2).abs() < 1e-4, "{o}");
        }
    }
    assert!(
        Scheduler::<ArrayD<f32>>::timesteps(&s).len() > 25,
        "the jump schedule ran"
    );
    let empty = ArrayD::zeros(IxDyn(&shape));
    assert!(inpaint_lesion(&mut s, &model, &background, &empty, &mut rng).is_err());
}
