// The solver primitive: out = keep * old + sum_i c_i * t_i + scale * z, z ~ N(0, 1) from
// Philox4x32-10 + Acklam's quantile exactly as diffusion_core::rng::normal_quad, so a seed
// gives the same noise on CPU and GPU. Arithmetic is in the element type with explicitly
// rounded operations (no FMA contraction), in the same order as the CPU backend.

#define LINCOMB_MAX_TERMS 16

// Passed by value as a kernel parameter (264 bytes), mirrored by a #[repr(C)] struct in Rust.
struct LincombTerms {
    u64 ptr[LINCOMB_MAX_TERMS];
    double coef[LINCOMB_MAX_TERMS];
    int count;
};

__device__ __forceinline__ void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
    const u32 M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += W0;
            k1 += W1;
        }
        u32 hi0 = __umulhi(M0, c[0]), lo0 = M0 * c[0];
        u32 hi1 = __umulhi(M1, c[2]), lo1 = M1 * c[2];
        u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// Acklam's normal quantile, term for term as diffusion_core::rng::normal_quantile, split into
// its central rational (95% of draws) and its tails (a log and a sqrt).
#define MA(a, b, c) __dadd_rn(__dmul_rn((a), (b)), (c))
__device__ __forceinline__ bool quantile_is_tail(double p) {
    const double P_LOW = 0.02425;
    return p < P_LOW || p > 1.0 - P_LOW;
}

__device__ __forceinline__ double quantile_central(double p) {
    const double A0 = -3.969683028665376e+01, A1 = 2.209460984245205e+02, A2 = -2.759285104469687e+02,
                 A3 = 1.383577518672690e+02, A4 = -3.066479806614716e+01, A5 = 2.506628277459239e+00;
    const double B0 = -5.447609879822406e+01, B1 = 1.615858368580409e+02, B2 = -1.556989798598866e+02,
                 B3 = 6.680131188771972e+01, B4 = -1.328068155288572e+01;
    double q = __dsub_rn(p, 0.5);
    double r = __dmul_rn(q, q);
    double num = __dmul_rn(MA(MA(MA(MA(MA(A0, r, A1), r, A2), r, A3), r, A4), r, A5), q);
    double den = MA(MA(MA(MA(MA(B0, r, B1), r, B2), r, B3), r, B4), r, 1.0);
    return __ddiv_rn(num, den);
}

__device__ __noinline__ double quantile_tail(double p) {
    const double P_LOW = 0.02425;
    const double C0 = -7.784894002430293e-03, C1 = -3.223964580411365e-01, C2 = -2.400758277161838e+00,
                 C3 = -2.549732539343734e+00, C4 = 4.374664141464968e+00, C5 = 2.938163982698783e+00;
    const double D0 = 7.784695709041462e-03, D1 = 3.224671290700398e-01, D2 = 2.445134137142996e+00,
                 D3 = 3.754408661907416e+00;
    double q = sqrt(__dmul_rn(-2.0, log(p < P_LOW ? p : __dsub_rn(1.0, p))));
    double num = MA(MA(MA(MA(MA(C0, q, C1), q, C2), q, C3), q, C4), q, C5);
    double den = MA(MA(MA(MA(D0, q, D1), q, D2), q, D3), q, 1.0);
    double x = __ddiv_rn(num, den);
    return p < P_LOW ? x : -x;
}
#undef MA

// Four standard normals from block `block` of (seed, stream): see normal_quad in core/src/rng.rs.
// Every lane takes the cheap central formula; the tails (about one lane in five has one of its
// four) are evaluated one per round, so a warp runs the costly branch about once per quad
// rather than once per lane.
__device__ __forceinline__ void normal_quad(u64 seed, u64 stream, u64 block, double out[4]) {
    u32 c[4] = {(u32)block, (u32)(block >> 32), (u32)stream, (u32)(stream >> 32)};
    philox4x32_10(c, (u32)seed, (u32)(seed >> 32));
    const double SCALE = 1.0 / 4294967296.0;  // 2^-32
    double p[4];
    int tails = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        p[k] = __dmul_rn(__dadd_rn((double)c[k], 0.5), SCALE);
        out[k] = quantile_central(p[k]);
        if (quantile_is_tail(p[k])) tails |= 1 << k;
    }
    while (tails) {
        int k = __ffs(tails) - 1;
        tails &= tails - 1;
        double pk = k == 0 ? p[0] : k == 1 ? p[1] : k == 2 ? p[2] : p[3];
        double z = quantile_tail(pk);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (j == k) out[j] = z;
        }
    }
}

// Element arithmetic in the tensor's type with explicitly rounded operations (no FMA
// contraction), in the CPU backend's order.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Four consecutive elements from `i`: one 16-byte load (two for doubles) when the quad is whole
// and the buffer 16-byte aligned, else element by element (missing ones read as zero). Plain
// loads, not the read-only path: `old` may be the output.
__device__ __forceinline__ void load_quad(const float* p, u64 i, u64 n, bool vec, float v[4]) {
    if (vec && i + 4 <= n) {
        float4 t = *(const float4*)(p + i);
        v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) v[k] = i + k < n ? p[i + k] : 0.0f;
    }
}

__device__ __forceinline__ void load_quad(const double* p, u64 i, u64 n, bool vec, double v[4]) {
    if (vec && i + 4 <= n) {
        double2 a = *(const double2*)(p + i), b = *(const double2*)(p + i + 2);
        v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) v[k] = i + k < n ? p[i + k] : 0.0;
    }
}

__device__ __forceinline__ void store_quad(float* p, u64 i, u64 n, bool vec, const float v[4]) {
    if (vec && i + 4 <= n) {
        *(float4*)(p + i) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k)
            if (i + k < n) p[i + k] = v[k];
    }
}

__device__ __forceinline__ void store_quad(double* p, u64 i, u64 n, bool vec, const double v[4]) {
    if (vec && i + 4 <= n) {
        *(double2*)(p + i) = make_double2(v[0], v[1]);
        *(double2*)(p + i + 2) = make_double2(v[2], v[3]);
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k)
            if (i + k < n) p[i + k] = v[k];
    }
}

// One thread per quad of elements (4q .. 4q + 3), so each Philox block is computed once.
// `old` may be null (keep is then ignored) or alias `out`; no term aliases `out`. N is the
// number of terms when it is small (loops unrolled, loads in flight together), else -1.
template <typename T, int N, bool NOISE>
__device__ void lincomb_quads(T* out, const T* old, double keep, const LincombTerms& terms, u64 n, double scale,
                              u64 seed, u64 stream, u64 offset) {
    const int count = N >= 0 ? N : terms.count;
    const bool has_old = old != 0 && keep != 0.0;
    u64 bits = (u64)out | (has_old ? (u64)old : 0);
    for (int t = 0; t < count; ++t) bits |= terms.ptr[t];
    const bool vec = (bits & 15) == 0;
    const u64 quads = (n + 3) / 4;
    GRID_STRIDE(q, quads) {
        const u64 i = 4 * (u64)q;
        T acc[4], v[4];
        int start = 0;
        if (has_old) {
            load_quad(old, i, n, vec, v);
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[k] = mul_rn((T)keep, v[k]);
        } else if (count > 0) {
            load_quad((const T*)terms.ptr[0], i, n, vec, v);
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[k] = mul_rn((T)terms.coef[0], v[k]);
            start = 1;
        } else {
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[k] = (T)0;
        }
#pragma unroll
        for (int t = start; t < count; ++t) {
            load_quad((const T*)terms.ptr[t], i, n, vec, v);
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[k] = add_rn(acc[k], mul_rn((T)terms.coef[t], v[k]));
        }
        if (NOISE) {
            double z[4];
            normal_quad(seed, stream, offset + (u64)q, z);
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[k] = add_rn(acc[k], (T)__dmul_rn(scale, z[k]));
        }
        store_quad(out, i, n, vec, acc);
    }
}

// The noise-free step and the noisy one are separate kernels: the quantile's f64 registers
// would otherwise lower the occupancy, and so the bytes in flight, of every plain step.
template <typename T, bool NOISE>
__device__ void lincomb(T* out, const T* old, double keep, const LincombTerms& terms, u64 n, double scale,
                        u64 seed, u64 stream, u64 offset) {
#define LINCOMB_CASE(N) lincomb_quads<T, N, NOISE>(out, old, keep, terms, n, scale, seed, stream, offset)
    switch (terms.count) {
        case 0: LINCOMB_CASE(0); break;
        case 1: LINCOMB_CASE(1); break;
        case 2: LINCOMB_CASE(2); break;
        case 3: LINCOMB_CASE(3); break;
        case 4: LINCOMB_CASE(4); break;
        default: LINCOMB_CASE(-1); break;
    }
#undef LINCOMB_CASE
}

// One signature for the four kernels (the noise-free ones ignore the noise arguments).
#define LINCOMB_KERNEL(NAME, T, NOISE)                                                                     \
    extern "C" __global__ void NAME(T* out, const T* old, double keep, LincombTerms terms, u64 n, double scale, \
                                    u64 seed, u64 stream, u64 offset) {                                    \
        lincomb<T, NOISE>(out, old, keep, terms, n, scale, seed, stream, offset);                         \
    }
LINCOMB_KERNEL(lincomb_f32, float, false)
LINCOMB_KERNEL(lincomb_f64, double, false)
LINCOMB_KERNEL(lincomb_noise_f32, float, true)
LINCOMB_KERNEL(lincomb_noise_f64, double, true)
#undef LINCOMB_KERNEL

// Fills with one value (zeros, or NaN to poison a buffer in tests).
extern "C" __global__ void fill_f32(float* out, float value, u64 n) {
    GRID_STRIDE(i, n) out[i] = value;
}

extern "C" __global__ void fill_f64(double* out, double value, u64 n) {
    GRID_STRIDE(i, n) out[i] = value;
}

// Sum of squares and count of non-finite values, per block; the host adds the partials in a
// fixed order so the result does not depend on scheduling. blockDim.x must be 256.
template <typename T>
__device__ void reduce_stats(const T* x, u64 n, double* partial_sumsq, u64* partial_nonfinite) {
    __shared__ double shared[256];
    double acc = 0.0, bad = 0.0;
    GRID_STRIDE(i, n) {
        double v = (double)x[i];
        acc += v * v;  // NaN and infinity propagate, as in the CPU backend
        if (!isfinite(v)) bad += 1.0;
    }
    double total = block_sum(acc, shared);
    double total_bad = block_sum(bad, shared);
    if (threadIdx.x == 0) {
        partial_sumsq[blockIdx.x] = total;
        partial_nonfinite[blockIdx.x] = (u64)total_bad;
    }
}

extern "C" __global__ void reduce_stats_f32(const float* x, u64 n, double* sumsq, u64* nonfinite) {
    reduce_stats<float>(x, n, sumsq, nonfinite);
}

extern "C" __global__ void reduce_stats_f64(const double* x, u64 n, double* sumsq, u64* nonfinite) {
    reduce_stats<double>(x, n, sumsq, nonfinite);
}
