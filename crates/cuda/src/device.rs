//! One CUDA device: its context and stream, the kernels compiled for it (once, cached) and a
//! cuBLAS handle.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig};

use crate::error::{CudaError, Result};
use crate::kernels::KernelFile;
use crate::nvrtc::{compile_kernel, guard, nvrtc_available};

/// Threads per block of every 1-D launch (a power of two: the block reductions need it).
pub(crate) const BLOCK: u32 = 256;

pub(crate) fn driver_err(context: &'static str) -> impl Fn(DriverError) -> CudaError {
    move |e| CudaError::Driver {
        context,
        message: format!("{e:?}"),
    }
}

/// A CUDA device ready to run this crate's kernels. Create with [`Gpu::new`]; share the
/// `Arc` between tensors. All work goes to one stream, so it is ordered.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    blas: Mutex<Option<Arc<CudaBlas>>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

impl Gpu {
    /// Opens device `ordinal`. Fails, without panicking, with [`CudaError::NoDriver`] when
    /// libcuda is missing, [`CudaError::NoDevice`] when the driver has no such device, and
    /// [`CudaError::NoNvrtc`] when kernels could not be compiled.
    pub fn new(ordinal: usize) -> Result<Arc<Self>> {
        // SAFETY: only dlopens the library and drops it; no symbol is called.
        let has_driver = guard("driver detection", || unsafe {
            cudarc::driver::sys::is_culib_present()
        });
        if !has_driver.unwrap_or(false) {
            return Err(CudaError::NoDriver);
        }
        let no_device = |reason: String| CudaError::NoDevice { ordinal, reason };
        let count = guard("cuDeviceGetCount", CudaContext::device_count)?
            .map_err(|e| no_device(format!("the driver failed to initialise: {e:?}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(no_device(format!("the driver reports {count} device(s)")));
        }
        if !nvrtc_available() {
            return Err(CudaError::NoNvrtc);
        }
        let ctx = guard("cuCtx", || CudaContext::new(ordinal))?.map_err(driver_err("CudaContext::new"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver_err("compute_capability"))?;
        let name = ctx.name().map_err(driver_err("device name"))?;
        let stream = ctx.default_stream();
        Ok(Arc::new(Self {
            ctx,
            stream,
            arch: format!("compute_{major}{minor}"),
            name,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
        }))
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtual architecture kernels are compiled for, e.g. `compute_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("synchronize"))
    }

    /// Kernel `name` from `file`, compiling and loading the file on first use.
    pub(crate) fn function(&self, file: &KernelFile, name: &str) -> Result<CudaFunction> {
        let mut functions = self.functions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = functions.get(name) {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
            match modules.get(file.name) {
                Some(m) => m.clone(),
                None => {
                    let ptx = compile_kernel(file, Some(&self.arch))?;
                    let m = self.ctx.load_module(ptx).map_err(driver_err("load_module"))?;
                    modules.insert(file.name, m.clone());
                    m
                }
            }
        };
        let f = module.load_function(name).map_err(driver_err("load_function"))?;
        functions.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// The cuBLAS handle, created on first use.
    pub(crate) fn blas(&self) -> Result<Arc<CudaBlas>> {
        let mut blas = self.blas.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = blas.as_ref() {
            return Ok(b.clone());
        }
        // SAFETY: only dlopens the library and drops it; no symbol is called.
        let present = guard("cublas detection", || unsafe {
            cudarc::cublas::sys::is_culib_present()
        });
        if !present.unwrap_or(false) {
            return Err(CudaError::NoCublas);
        }
        let handle =
            guard("cublasCreate", || CudaBlas::new(self.stream.clone()))?.map_err(|e| CudaError::Cublas {
                context: "cublasCreate",
                message: format!("{e:?}"),
            })?;
        let handle = Arc::new(handle);
        *blas = Some(handle.clone());
        Ok(handle)
    }
}

/// A grid-stride launch over `n` items.
pub(crate) fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row (or group) with `BLOCK` doubles of shared memory for the reductions.
pub(crate) fn grid_rows(rows: usize) -> Result<LaunchConfig> {
    let rows = u32::try_from(rows).map_err(|_| CudaError::InvalidArgument {
        name: "rows",
        reason: format!("{rows} rows exceed the grid limit"),
    })?;
    Ok(LaunchConfig {
        grid_dim: (rows.max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: BLOCK * 8,
    })
}
