//! NVRTC compiles every embedded kernel. Needs only libnvrtc (no GPU): runs when it can be
//! loaded, skips with a message otherwise (`DIFFUSION_REQUIRE_NVRTC=1` makes the skip a failure).

#[cfg(feature = "cuda")]
#[test]
fn kernels_compile_with_nvrtc() {
    if !diffusion_cuda::nvrtc::nvrtc_available() {
        let msg = "SKIP kernels_compile_with_nvrtc: libnvrtc not found (run crates/cuda/scripts/install-nvrtc.sh \
                   and add the printed directory to LD_LIBRARY_PATH)";
        assert!(
            !diffusion_cuda::nvrtc_required(),
            "{msg}, but DIFFUSION_REQUIRE_NVRTC is set"
        );
        eprintln!("{msg}");
        return;
    }
    let version = diffusion_cuda::nvrtc::nvrtc_version().expect("nvrtc version");
    let compiled = diffusion_cuda::compile_all_kernels().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(compiled.len(), diffusion_cuda::kernels::ALL.len());
    for (name, bytes) in &compiled {
        eprintln!(
            "nvrtc {}.{}: {name}.cu -> {bytes} bytes of PTX",
            version.0, version.1
        );
        assert!(*bytes > 0, "{name} produced no PTX");
    }
    // Also for a concrete modern architecture (H100), as Gpu::new would compile them.
    for file in diffusion_cuda::kernels::ALL {
        let ptx = diffusion_cuda::nvrtc::compile_kernel(&file, Some("compute_90"))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = ptx.to_src();
        assert!(text.contains(".target sm_90"), "{}: unexpected target", file.name);
        if file.name == "lincomb" {
            // The by-value term struct is as large as the Rust mirror (see tensor.rs).
            for kernel in [
                "lincomb_f32",
                "lincomb_f64",
                "lincomb_noise_f32",
                "lincomb_noise_f64",
            ] {
                let param = format!("{kernel}_param_3[264]");
                assert!(text.contains(&param), "PTX lacks {param}");
            }
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn a_broken_kernel_is_a_compile_error_not_a_panic() {
    if !diffusion_cuda::nvrtc::nvrtc_available() {
        eprintln!("SKIP a_broken_kernel_is_a_compile_error_not_a_panic: libnvrtc not found");
        return;
    }
    let broken = diffusion_cuda::kernels::KernelFile {
        name: "broken",
        source: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
    };
    let err = diffusion_cuda::nvrtc::compile_kernel(&broken, None).unwrap_err();
    match err {
        diffusion_cuda::CudaError::Compile { file, log } => {
            assert_eq!(file, "broken");
            assert!(log.contains("undefined_name"), "{log}");
        }
        other => panic!("expected a compile error, got {other}"),
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn kernels_compile_with_nvrtc() {
    assert_eq!(
        diffusion_cuda::compile_all_kernels().unwrap_err(),
        diffusion_cuda::CudaError::FeatureDisabled
    );
    eprintln!("SKIP kernels_compile_with_nvrtc: built without the `cuda` feature");
}
