//! `CudaTensor`: a device buffer that implements `diffusion_core::Tensor`.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, PushKernelArg, ValidAsZeroBits};
use diffusion_core::rng::NormalBlock;
use diffusion_core::tensor::check_same_shape;
use diffusion_core::{CoreError, Element, Noise, Tensor};

use crate::device::{BLOCK, Gpu, driver_err, grid_1d};
use crate::error::{CudaError, Result};
use crate::kernels::{LINCOMB, LINCOMB_MAX_TERMS};

/// Element types with device kernels.
pub trait GpuElement: Element + DeviceRepr + ValidAsZeroBits {
    /// Kernel name suffix: `lincomb_f32`, ...
    const SUFFIX: &'static str;
}

impl GpuElement for f32 {
    const SUFFIX: &'static str = "f32";
}

impl GpuElement for f64 {
    const SUFFIX: &'static str = "f64";
}

/// The term list of the lincomb kernel, passed by value; mirrors `LincombTerms` in lincomb.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct LincombTerms {
    ptr: [u64; LINCOMB_MAX_TERMS],
    coef: [f64; LINCOMB_MAX_TERMS],
    count: i32,
}

// SAFETY: plain old data with the same C layout as the kernel's struct.
unsafe impl DeviceRepr for LincombTerms {}

/// A coefficient and the buffer it scales.
type Term<T> = (f64, Arc<CudaSlice<T>>);

#[derive(Clone)]
enum Storage<T> {
    /// All zeros, not yet allocated: `zeros_like` must be infallible, and the first
    /// `lincomb` (which can report an error) allocates.
    Zeros,
    /// A device buffer, shared copy-on-write between clones.
    Buffer(Arc<CudaSlice<T>>),
}

/// A dense row-major tensor on a CUDA device.
///
/// Cloning is cheap (the buffer is shared and copied on the next write). The infallible
/// [`Tensor`] methods that must read the device (`to_f64_vec`, `count_non_finite`,
/// `sum_squares`) panic if the device fails (e.g. it was lost); the fallible
/// [`CudaTensor::to_host`] and [`CudaTensor::stats`] report it instead.
#[derive(Clone)]
pub struct CudaTensor<T: GpuElement> {
    gpu: Arc<Gpu>,
    shape: Vec<usize>,
    storage: Storage<T>,
}

impl<T: GpuElement> fmt::Debug for CudaTensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaTensor")
            .field("dtype", &T::SUFFIX)
            .field("shape", &self.shape)
            .field("lazy_zeros", &matches!(self.storage, Storage::Zeros))
            .field("gpu", &self.gpu)
            .finish()
    }
}

impl<T: GpuElement> CudaTensor<T> {
    /// Zeros, allocated on first write.
    pub fn zeros(gpu: &Arc<Gpu>, shape: &[usize]) -> Self {
        Self {
            gpu: gpu.clone(),
            shape: shape.to_vec(),
            storage: Storage::Zeros,
        }
    }

    /// Copies `data` (row-major) to the device.
    pub fn from_host(gpu: &Arc<Gpu>, shape: &[usize], data: &[T]) -> Result<Self> {
        let len: usize = shape.iter().product();
        if data.len() != len {
            return Err(CudaError::ShapeMismatch {
                context: "from_host",
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        let buf = gpu.stream().clone_htod(data).map_err(driver_err("clone_htod"))?;
        Ok(Self {
            gpu: gpu.clone(),
            shape: shape.to_vec(),
            storage: Storage::Buffer(Arc::new(buf)),
        })
    }

    /// Converts `data` to `T` and copies it to the device.
    pub fn from_f64(gpu: &Arc<Gpu>, shape: &[usize], data: &[f64]) -> Result<Self> {
        let converted: Vec<T> = data.iter().map(|&v| T::of_f64(v)).collect();
        Self::from_host(gpu, shape, &converted)
    }

    /// Every element set to `value` (e.g. NaN, to poison an output buffer in tests).
    pub fn full(gpu: &Arc<Gpu>, shape: &[usize], value: T) -> Result<Self> {
        let mut t = Self::zeros(gpu, shape);
        let len = t.len();
        let f = gpu.function(&LINCOMB, &format!("fill_{}", T::SUFFIX))?;
        let out = t.writable()?;
        if len > 0 {
            let n = len as u64;
            let mut launch = gpu.stream().launch_builder(&f);
            launch.arg(out).arg(&value).arg(&n);
            // SAFETY: fill_* writes exactly `n` elements of `out`, which holds `n`.
            unsafe { launch.launch(grid_1d(len)) }.map_err(driver_err("fill"))?;
        }
        Ok(t)
    }

    /// The device this tensor lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(CudaError::ShapeMismatch {
                context: "reshape",
                expected: self.shape.clone(),
                got: shape.to_vec(),
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Copies the elements to the host (row-major).
    pub fn to_host(&self) -> Result<Vec<T>> {
        match &self.storage {
            Storage::Zeros => Ok(vec![T::default(); self.len()]),
            Storage::Buffer(buf) => self
                .gpu
                .stream()
                .clone_dtoh(buf.as_ref())
                .map_err(driver_err("clone_dtoh")),
        }
    }

    /// The elements as f64 on the host.
    pub fn to_host_f64(&self) -> Result<Vec<f64>> {
        Ok(self.to_host()?.into_iter().map(Element::as_f64).collect())
    }

    /// `(sum of squares, number of non-finite elements)`, reduced on the device in a fixed
    /// order (per-block partials added on the host), so repeatable run to run.
    pub fn stats(&self) -> Result<(f64, usize)> {
        let Storage::Buffer(buf) = &self.storage else {
            return Ok((0.0, 0));
        };
        let len = self.len();
        if len == 0 {
            return Ok((0.0, 0));
        }
        let cfg = grid_1d(len);
        let blocks = cfg.grid_dim.0 as usize;
        let stream = self.gpu.stream();
        let mut sumsq = stream.alloc_zeros::<f64>(blocks).map_err(driver_err("alloc"))?;
        let mut bad = stream.alloc_zeros::<u64>(blocks).map_err(driver_err("alloc"))?;
        let f = self
            .gpu
            .function(&LINCOMB, &format!("reduce_stats_{}", T::SUFFIX))?;
        let n = len as u64;
        debug_assert_eq!(cfg.block_dim.0, BLOCK);
        let mut launch = stream.launch_builder(&f);
        launch.arg(buf.as_ref()).arg(&n).arg(&mut sumsq).arg(&mut bad);
        // SAFETY: the kernel reads `n` elements and writes one partial per block.
        unsafe { launch.launch(cfg) }.map_err(driver_err("reduce_stats"))?;
        let sumsq = stream.clone_dtoh(&sumsq).map_err(driver_err("clone_dtoh"))?;
        let bad = stream.clone_dtoh(&bad).map_err(driver_err("clone_dtoh"))?;
        Ok((sumsq.iter().sum(), bad.iter().sum::<u64>() as usize))
    }

    /// Overwrites this tensor with `src`'s values by a device-to-device copy.
    pub fn copy_from(&mut self, src: &Self) -> Result<()> {
        if self.shape != src.shape {
            return Err(CudaError::ShapeMismatch {
                context: "copy_from",
                expected: self.shape.clone(),
                got: src.shape.clone(),
            });
        }
        self.check_device(src, "copy_from")?;
        let Storage::Buffer(from) = &src.storage else {
            *self = src.clone();
            return Ok(());
        };
        let from = from.clone();
        let stream = self.gpu.stream().clone();
        stream
            .memcpy_dtod(from.as_ref(), self.writable()?)
            .map_err(driver_err("memcpy_dtod"))
    }

    /// The flat (row-major) concatenation of `parts`, in order, as one tensor of `shape`:
    /// e.g. per-row-block weight gradients `[n_i, k]` joined into `[sum n_i, k]`.
    pub fn concat(gpu: &Arc<Gpu>, parts: &[&Self], shape: &[usize]) -> Result<Self> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = Self::zeros(gpu, shape);
        if total != out.len() {
            return Err(CudaError::ShapeMismatch {
                context: "concat: the parts' elements must fill the shape",
                expected: shape.to_vec(),
                got: vec![total],
            });
        }
        for p in parts {
            out.check_device(p, "concat")?;
        }
        if total == 0 {
            return Ok(out);
        }
        let bufs = parts.iter().map(|p| p.readable()).collect::<Result<Vec<_>>>()?;
        let stream = gpu.stream().clone();
        let dst = out.writable()?;
        let mut at = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            let mut view = dst
                .try_slice_mut(at..at + b.len())
                .ok_or_else(|| CudaError::InvalidArgument {
                    name: "concat",
                    reason: format!("part at {at} of {} elements overruns {total}", b.len()),
                })?;
            stream
                .memcpy_dtod(b.as_ref(), &mut view)
                .map_err(driver_err("memcpy_dtod"))?;
            at += b.len();
        }
        Ok(out)
    }

    /// A copy of the flat (row-major) elements `start ..` as a tensor of `shape`: e.g. rows
    /// `r0 .. r0 + n` of a matrix `[r, k]` are `copy_range(r0 * k, &[n, k])`.
    pub fn copy_range(&self, start: usize, shape: &[usize]) -> Result<Self> {
        let mut out = Self::zeros(&self.gpu, shape);
        let len = out.len();
        let src = self.readable()?;
        let view = start
            .checked_add(len)
            .and_then(|end| src.try_slice(start..end))
            .ok_or_else(|| CudaError::ShapeMismatch {
                context: "copy_range: elements start .. start + len of a tensor",
                expected: vec![start, len],
                got: self.shape.clone(),
            })?;
        if len == 0 {
            return Ok(out);
        }
        let stream = self.gpu.stream().clone();
        stream
            .memcpy_dtod(&view, out.writable()?)
            .map_err(driver_err("memcpy_dtod"))?;
        Ok(out)
    }

    /// A device buffer holding the current values (allocating zeros for a lazy tensor).
    pub(crate) fn readable(&self) -> Result<Arc<CudaSlice<T>>> {
        match &self.storage {
            Storage::Buffer(buf) => Ok(buf.clone()),
            Storage::Zeros => {
                let buf = self
                    .gpu
                    .stream()
                    .alloc_zeros::<T>(self.len())
                    .map_err(driver_err("alloc_zeros"))?;
                Ok(Arc::new(buf))
            }
        }
    }

    /// A buffer this tensor owns alone holding its current values, for kernels that update
    /// in place: shared storage is copied first, lazy zeros are allocated.
    pub(crate) fn unique(&mut self) -> Result<&mut CudaSlice<T>> {
        let shared = match &self.storage {
            Storage::Buffer(buf) if Arc::strong_count(buf) == 1 => None,
            Storage::Buffer(buf) => Some(buf.clone()),
            Storage::Zeros => {
                let buf = self
                    .gpu
                    .stream()
                    .alloc_zeros::<T>(self.len())
                    .map_err(driver_err("alloc_zeros"))?;
                self.storage = Storage::Buffer(Arc::new(buf));
                None
            }
        };
        if let Some(src) = shared {
            let stream = self.gpu.stream().clone();
            let dst = self.writable()?;
            stream
                .memcpy_dtod(src.as_ref(), dst)
                .map_err(driver_err("memcpy_dtod"))?;
        }
        self.writable()
    }

    /// A buffer this tensor owns alone, for a kernel that overwrites every element: shared
    /// or lazy storage is replaced by a fresh (uninitialised) allocation.
    pub(crate) fn writable(&mut self) -> Result<&mut CudaSlice<T>> {
        let unique = matches!(&self.storage, Storage::Buffer(buf) if Arc::strong_count(buf) == 1);
        if !unique {
            // SAFETY: every caller overwrites all elements before anything reads them.
            let buf = unsafe { self.gpu.stream().alloc::<T>(self.len()) }.map_err(driver_err("alloc"))?;
            self.storage = Storage::Buffer(Arc::new(buf));
        }
        match &mut self.storage {
            Storage::Buffer(buf) => Arc::get_mut(buf).ok_or(CudaError::InvalidArgument {
                name: "tensor",
                reason: "buffer unexpectedly shared".into(),
            }),
            Storage::Zeros => unreachable!("allocated above"),
        }
    }

    pub(crate) fn check_device(&self, other: &Self, context: &'static str) -> Result<()> {
        if Arc::ptr_eq(&self.gpu, &other.gpu) {
            Ok(())
        } else {
            Err(CudaError::DeviceMismatch { context })
        }
    }

    /// The fused lincomb; see [`Tensor::lincomb`].
    pub fn try_lincomb(&mut self, keep: f64, terms: &[(f64, &Self)], noise: Option<Noise<'_>>) -> Result<()> {
        for (_, t) in terms {
            check_same_shape("lincomb", &self.shape, &t.shape).map_err(|_| CudaError::ShapeMismatch {
                context: "lincomb",
                expected: self.shape.clone(),
                got: t.shape.clone(),
            })?;
            self.check_device(t, "lincomb")?;
        }
        let len = self.len();
        // The draw is reserved even for an empty tensor, like the CPU backend.
        let noise = noise.map(|n| (n.scale, n.rng.reserve_normals(len)));
        if len == 0 {
            return Ok(());
        }
        // Lazy-zero terms add nothing; the rest are read through shared handles.
        let live: Vec<Term<T>> = terms
            .iter()
            .filter_map(|(c, t)| match &t.storage {
                Storage::Buffer(b) => Some((*c, b.clone())),
                Storage::Zeros => None,
            })
            .collect();
        // The old values, if they matter: kept alive here while the kernel reads them.
        let old = match (&self.storage, keep != 0.0) {
            (Storage::Buffer(b), true) => Some(b.clone()),
            _ => None,
        };
        // In place when no other tensor shares the buffer (our handle plus `old`'s).
        let in_place = old.as_ref().is_some_and(|b| Arc::strong_count(b) == 2);
        // Writing in place needs the only handle: drop `old`'s now (shadowing would keep it
        // alive to the end of the function), or `writable` would hand out a fresh buffer
        // that the kernel then reads as the old values.
        let old = if in_place {
            drop(old);
            None
        } else {
            old
        };
        let plain = self.gpu.function(&LINCOMB, &format!("lincomb_{}", T::SUFFIX))?;
        let noisy = match noise {
            Some(_) => Some(
                self.gpu
                    .function(&LINCOMB, &format!("lincomb_noise_{}", T::SUFFIX))?,
            ),
            None => None,
        };
        let gpu = self.gpu.clone();
        let stream = gpu.stream();
        let out = self.writable()?;
        let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
        let (old_ptr, _old_guard) = match &old {
            Some(b) => {
                let (p, g) = b.device_ptr(stream);
                (p, Some(g))
            }
            None if in_place => (out_ptr, None),
            None => (0, None),
        };
        let mut chunks: Vec<&[Term<T>]> = live.chunks(LINCOMB_MAX_TERMS).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut args = LincombTerms {
                ptr: [0; LINCOMB_MAX_TERMS],
                coef: [0.0; LINCOMB_MAX_TERMS],
                count: chunk.len() as i32,
            };
            let mut guards = Vec::with_capacity(chunk.len());
            for (j, (c, buf)) in chunk.iter().enumerate() {
                let (p, g) = buf.device_ptr(stream);
                args.ptr[j] = p;
                args.coef[j] = *c;
                guards.push(g);
            }
            // Later chunks accumulate onto the output of the first (`1 * acc` is exact), and
            // the noise rides on the last, so it is added after every term, as on the CPU.
            let (keep, old_ptr) = if i == 0 { (keep, old_ptr) } else { (1.0, out_ptr) };
            let noise = if i + 1 == last { noise } else { None };
            let block = noise.map_or(
                NormalBlock {
                    seed: 0,
                    stream: 0,
                    offset: 0,
                },
                |(_, b)| b,
            );
            let scale = noise.map_or(0.0, |(s, _)| s);
            let f = match (&noisy, noise) {
                (Some(f), Some(_)) => f,
                _ => &plain,
            };
            let n = len as u64;
            let mut launch = stream.launch_builder(f);
            launch
                .arg(&out_ptr)
                .arg(&old_ptr)
                .arg(&keep)
                .arg(&args)
                .arg(&n)
                .arg(&scale)
                .arg(&block.seed)
                .arg(&block.stream)
                .arg(&block.offset);
            // SAFETY: every pointer addresses `n` elements of T on this context and stays alive
            // (guards, `live`, `old`) until the launch is queued on the one stream that uses them.
            unsafe { launch.launch(grid_1d(len.div_ceil(4))) }.map_err(driver_err("lincomb"))?;
        }
        Ok(())
    }
}

impl<T: GpuElement> Tensor for CudaTensor<T> {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn zeros_like(&self) -> Self {
        Self::zeros(&self.gpu, &self.shape)
    }

    fn lincomb(
        &mut self,
        keep: f64,
        terms: &[(f64, &Self)],
        noise: Option<Noise<'_>>,
    ) -> Result<(), CoreError> {
        self.try_lincomb(keep, terms, noise).map_err(CoreError::from)
    }

    fn to_f64_vec(&self) -> Vec<f64> {
        self.to_host_f64()
            .unwrap_or_else(|e| panic!("CudaTensor::to_f64_vec: the device failed: {e}"))
    }

    fn from_f64_like(&self, data: &[f64]) -> Result<Self, CoreError> {
        if data.len() != self.len() {
            return Err(CoreError::ShapeMismatch {
                context: "from_f64_like",
                expected: self.shape.clone(),
                got: vec![data.len()],
            });
        }
        Ok(Self::from_f64(&self.gpu, &self.shape, data)?)
    }

    fn count_non_finite(&self) -> usize {
        self.stats()
            .unwrap_or_else(|e| panic!("CudaTensor::count_non_finite: the device failed: {e}"))
            .1
    }

    fn sum_squares(&self) -> f64 {
        self.stats()
            .unwrap_or_else(|e| panic!("CudaTensor::sum_squares: the device failed: {e}"))
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's `LincombTerms` is 16 pointers, 16 doubles and an int padded to 8 bytes;
    /// tests/nvrtc.rs checks NVRTC's side of the same number in the PTX parameter list.
    #[test]
    fn lincomb_terms_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<LincombTerms>(), 264);
        assert_eq!(std::mem::align_of::<LincombTerms>(), 8);
    }
}
