use thiserror::Error;

/// Errors raised by the CUDA backend. Every "no GPU here" situation is its own variant, so
/// callers (and tests) can tell "skip" from "broken".
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum CudaError {
    /// The crate was built without its `cuda` feature.
    #[error("diffusion-cuda was built without the `cuda` feature")]
    FeatureDisabled,
    /// libcuda (the driver library) could not be loaded.
    #[error("the CUDA driver library (libcuda) could not be loaded: no NVIDIA driver on this machine")]
    NoDriver,
    /// The driver loaded but reports no usable device (or not the one asked for).
    #[error("no CUDA device {ordinal}: {reason}")]
    NoDevice { ordinal: usize, reason: String },
    /// libnvrtc could not be loaded, so kernels cannot be compiled.
    #[error(
        "the NVRTC library (libnvrtc) could not be loaded; run crates/cuda/scripts/install-nvrtc.sh and put \
         the directory it prints in LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    /// libcublas could not be loaded.
    #[error("the cuBLAS library (libcublas) could not be loaded")]
    NoCublas,
    /// NVRTC rejected a kernel source.
    #[error("NVRTC failed to compile kernel file {file}: {log}")]
    Compile { file: String, log: String },
    /// A CUDA driver call failed.
    #[error("CUDA driver error in {context}: {message}")]
    Driver { context: &'static str, message: String },
    /// A cuBLAS call failed.
    #[error("cuBLAS error in {context}: {message}")]
    Cublas { context: &'static str, message: String },
    /// A library call panicked (cudarc panics on missing symbols); caught and reported.
    #[error("CUDA library call panicked in {context}: {message}")]
    Panicked { context: &'static str, message: String },
    /// Tensor shapes do not fit the operation.
    #[error("shape mismatch in {context}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        context: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// An argument is outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    /// Tensors living on different devices (contexts) were combined.
    #[error("tensors on different CUDA devices were combined in {context}")]
    DeviceMismatch { context: &'static str },
}

/// Result with [`CudaError`].
pub type Result<T, E = CudaError> = std::result::Result<T, E>;

impl From<CudaError> for diffusion_core::CoreError {
    fn from(e: CudaError) -> Self {
        match e {
            CudaError::ShapeMismatch {
                context,
                expected,
                got,
            } => diffusion_core::CoreError::ShapeMismatch {
                context,
                expected,
                got,
            },
            other => diffusion_core::CoreError::Model(format!("cuda: {other}")),
        }
    }
}
