//! Run-time compilation of the embedded kernels with NVRTC (needs only libnvrtc, no GPU).

use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};

use crate::error::{CudaError, Result};
use crate::kernels::KernelFile;

/// Runs a cudarc call that may panic (it panics when a library or symbol is missing) and
/// turns the panic into [`CudaError::Panicked`].
pub(crate) fn guard<T>(context: &'static str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        CudaError::Panicked { context, message }
    })
}

/// Environment variable naming a directory that holds `libnvrtc.so*` (what
/// scripts/install-nvrtc.sh prints); used when the library is not on the loader's path.
pub const NVRTC_DIR_ENV: &str = "DIFFUSION_NVRTC_DIR";

/// Loads libnvrtc (and its builtins library) from `dir` by absolute path, globally and for
/// the life of the process. cudarc later asks the loader for `libnvrtc.so.13` by name, and
/// the loader answers with the already loaded library of that soname, so no LD_LIBRARY_PATH
/// is needed. Harmless if it was already loaded.
#[cfg(unix)]
pub fn preload_nvrtc(dir: &std::path::Path) -> Result<()> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    let entries = std::fs::read_dir(dir).map_err(|e| CudaError::InvalidArgument {
        name: "nvrtc directory",
        reason: format!("{}: {e}", dir.display()),
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("libnvrtc") && n.contains(".so") && !n.contains(".alt."))
        .collect();
    // The builtins first (libnvrtc opens them by soname on first compile), then libnvrtc itself.
    names.sort_by_key(|n| (!n.starts_with("libnvrtc-builtins"), n.clone()));
    let mut loaded_main = false;
    for name in names {
        // SAFETY: NVIDIA's libraries run no unusual initialisers; they stay loaded for good.
        let lib = unsafe { Library::open(Some(dir.join(&name)), RTLD_NOW | RTLD_GLOBAL) };
        if let Ok(lib) = lib {
            loaded_main |= !name.starts_with("libnvrtc-builtins");
            std::mem::forget(lib);
        }
    }
    if loaded_main {
        Ok(())
    } else {
        Err(CudaError::NoNvrtc)
    }
}

/// Preloads from [`NVRTC_DIR_ENV`] once, if it is set.
fn preload_from_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        if let Some(dir) = std::env::var_os(NVRTC_DIR_ENV) {
            let _ = preload_nvrtc(std::path::Path::new(&dir));
        }
    });
}

/// Whether libnvrtc can be loaded: from the directory in `DIFFUSION_NVRTC_DIR` if set, else
/// by cudarc's search of the usual sonames through the dynamic loader (LD_LIBRARY_PATH counts).
pub fn nvrtc_available() -> bool {
    preload_from_env();
    // SAFETY: only dlopens the library and drops it again; no symbol is called.
    guard("nvrtc detection", || unsafe {
        cudarc::nvrtc::sys::is_culib_present()
    })
    .unwrap_or(false)
}

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion only writes the two integers it is given.
    let status = guard("nvrtcVersion", || unsafe {
        cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor)
    })?;
    status.result().map_err(|e| CudaError::Compile {
        file: "<version>".into(),
        log: format!("{e:?}"),
    })?;
    Ok((major, minor))
}

/// Compiles one kernel file to PTX. `arch` is e.g. `"compute_90"`; `None` lets NVRTC pick its
/// default (the oldest architecture it supports, so the PTX loads on any newer GPU).
pub fn compile_kernel(file: &KernelFile, arch: Option<&str>) -> Result<Ptx> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let mut options = vec!["--std=c++17".to_string()];
    if let Some(arch) = arch {
        options.push(format!("--gpu-architecture={arch}"));
    }
    let opts = CompileOptions {
        options,
        name: Some(format!("{}.cu", file.name)),
        ..Default::default()
    };
    let source = file.full_source();
    let compiled = guard("nvrtc compile", || compile_ptx_with_opts(source, opts))?;
    compiled.map_err(|e| CudaError::Compile {
        file: file.name.to_string(),
        log: match e {
            cudarc::nvrtc::CompileError::CompileError { log, nvrtc, .. } => {
                format!("{nvrtc:?}: {}", log.to_string_lossy())
            }
            other => format!("{other:?}"),
        },
    })
}

/// Compiles every embedded kernel file; returns (file name, PTX size in bytes) for each.
pub fn compile_all(arch: Option<&str>) -> Result<Vec<(String, usize)>> {
    crate::kernels::ALL
        .iter()
        .map(|file| {
            let ptx = compile_kernel(file, arch)?;
            let bytes = ptx.as_bytes().map(|b| b.len()).unwrap_or(0);
            Ok((file.name.to_string(), bytes))
        })
        .collect()
}
