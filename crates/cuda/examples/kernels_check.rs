//! Compiles every embedded kernel with NVRTC and prints the PTX sizes (no GPU needed):
//!   LD_LIBRARY_PATH=$(bash crates/cuda/scripts/install-nvrtc.sh | tail -n1) \
//!     cargo run -p diffusion-cuda --features cuda --example kernels_check

fn main() -> std::process::ExitCode {
    match diffusion_cuda::compile_all_kernels() {
        Ok(list) => {
            for (name, bytes) in list {
                println!("{name}.cu: {bytes} bytes of PTX");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kernels-check failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
