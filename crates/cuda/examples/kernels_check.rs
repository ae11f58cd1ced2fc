//! Compiles every embedded kernel with NVRTC and prints the PTX sizes (no GPU needed):
//!   LD_LIBRARY_PATH=$(bash crates/cuda/scripts/install-nvrtc.sh | tail -n1) \
//!     cargo run -p diffusion-cuda --features cuda --example kernels_check [-- PTX_DIR]
//! With PTX_DIR, also writes each file's PTX for compute_90 there (`ptxas -arch=sm_90 -v`
//! on a GPU machine then reports registers and spills).

fn main() -> std::process::ExitCode {
    let result = diffusion_cuda::compile_all_kernels().and_then(|list| {
        for (name, bytes) in list {
            println!("{name}.cu: {bytes} bytes of PTX");
        }
        if let Some(dir) = std::env::args().nth(1) {
            write_ptx(std::path::Path::new(&dir))?;
        }
        Ok(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernels-check failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "cuda")]
fn write_ptx(dir: &std::path::Path) -> diffusion_cuda::Result<()> {
    for file in diffusion_cuda::kernels::ALL {
        let ptx = diffusion_cuda::nvrtc::compile_kernel(&file, Some("compute_90"))?;
        let path = dir.join(format!("{}.ptx", file.name));
        std::fs::write(&path, ptx.to_src()).map_err(|e| diffusion_cuda::CudaError::InvalidArgument {
            name: "PTX_DIR",
            reason: format!("{}: {e}", path.display()),
        })?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn write_ptx(_dir: &std::path::Path) -> diffusion_cuda::Result<()> {
    Err(diffusion_cuda::CudaError::FeatureDisabled)
}
