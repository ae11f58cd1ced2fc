// Shared by every kernel file (prepended by the Rust side, NVRTC has no include path here).
// Index types: NVRTC has no <cstdint>, so the fixed-width names are spelled out.
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

// Grid-stride loop over [0, n): correct for any launch size.
#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)blockDim.x * gridDim.x)

// Block-wide sum of a double (blockDim.x a power of two, at most 1024); every thread gets the result.
__device__ double block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    double r = shared[0];
    __syncthreads();
    return r;
}

// Block-wide max of a double (same contract as block_sum).
__device__ double block_max(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] = fmax(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    double r = shared[0];
    __syncthreads();
    return r;
}

// NVRTC has no <math.h> macros: negative infinity spelled by its bit pattern.
#define NEG_INF __longlong_as_double(0xfff0000000000000ULL)
