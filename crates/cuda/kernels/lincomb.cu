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

// Acklam's normal quantile, term for term as diffusion_core::rng::normal_quantile.
__device__ __forceinline__ double normal_quantile(double p) {
    const double A0 = -3.969683028665376e+01, A1 = 2.209460984245205e+02, A2 = -2.759285104469687e+02,
                 A3 = 1.383577518672690e+02, A4 = -3.066479806614716e+01, A5 = 2.506628277459239e+00;
    const double B0 = -5.447609879822406e+01, B1 = 1.615858368580409e+02, B2 = -1.556989798598866e+02,
                 B3 = 6.680131188771972e+01, B4 = -1.328068155288572e+01;
    const double C0 = -7.784894002430293e-03, C1 = -3.223964580411365e-01, C2 = -2.400758277161838e+00,
                 C3 = -2.549732539343734e+00, C4 = 4.374664141464968e+00, C5 = 2.938163982698783e+00;
    const double D0 = 7.784695709041462e-03, D1 = 3.224671290700398e-01, D2 = 2.445134137142996e+00,
                 D3 = 3.754408661907416e+00;
    const double P_LOW = 0.02425;
#define MA(a, b, c) __dadd_rn(__dmul_rn((a), (b)), (c))
    if (p < P_LOW || p > 1.0 - P_LOW) {
        double q = sqrt(__dmul_rn(-2.0, log(p < P_LOW ? p : __dsub_rn(1.0, p))));
        double num = MA(MA(MA(MA(MA(C0, q, C1), q, C2), q, C3), q, C4), q, C5);
        double den = MA(MA(MA(MA(D0, q, D1), q, D2), q, D3), q, 1.0);
        double x = __ddiv_rn(num, den);
        return p < P_LOW ? x : -x;
    }
    double q = __dsub_rn(p, 0.5);
    double r = __dmul_rn(q, q);
    double num = __dmul_rn(MA(MA(MA(MA(MA(A0, r, A1), r, A2), r, A3), r, A4), r, A5), q);
    double den = MA(MA(MA(MA(MA(B0, r, B1), r, B2), r, B3), r, B4), r, 1.0);
#undef MA
    return __ddiv_rn(num, den);
}

// Four standard normals from block `block` of (seed, stream): see normal_quad in core/src/rng.rs.
__device__ __forceinline__ void normal_quad(u64 seed, u64 stream, u64 block, double out[4]) {
    u32 c[4] = {(u32)block, (u32)(block >> 32), (u32)stream, (u32)(stream >> 32)};
    philox4x32_10(c, (u32)seed, (u32)(seed >> 32));
    const double SCALE = 1.0 / 4294967296.0;  // 2^-32
    for (int k = 0; k < 4; ++k) out[k] = normal_quantile(__dmul_rn(__dadd_rn((double)c[k], 0.5), SCALE));
}

// Element arithmetic in the tensor's type with explicitly rounded operations (no FMA
// contraction), in the CPU backend's order.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// One thread per quad of elements (4q .. 4q + 3), so each Philox block is computed once.
// `old` may be null (keep is then ignored) or alias `out`.
template <typename T>
__device__ void lincomb(T* out, const T* old, double keep, const LincombTerms& terms, u64 n, int has_noise,
                        double scale, u64 seed, u64 stream, u64 offset) {
    u64 quads = (n + 3) / 4;
    GRID_STRIDE(q, quads) {
        double z[4] = {0.0, 0.0, 0.0, 0.0};
        if (has_noise) normal_quad(seed, stream, offset + (u64)q, z);
        for (int lane = 0; lane < 4; ++lane) {
            u64 i = 4 * (u64)q + lane;
            if (i >= n) break;
            T acc = (T)0;
            int first = 0;
            if (old != 0 && keep != 0.0) {
                acc = mul_rn((T)keep, old[i]);
                if (terms.count > 0) {
                    acc = add_rn(acc, mul_rn((T)terms.coef[0], ((const T*)terms.ptr[0])[i]));
                    first = 1;
                }
            } else if (terms.count > 0) {
                acc = mul_rn((T)terms.coef[0], ((const T*)terms.ptr[0])[i]);
                first = 1;
            }
            for (int t = first; t < terms.count; ++t) {
                const T* src = (const T*)terms.ptr[t];
                acc = add_rn(acc, mul_rn((T)terms.coef[t], src[i]));
            }
            if (has_noise) acc = add_rn(acc, (T)__dmul_rn(scale, z[lane]));
            out[i] = acc;
        }
    }
}

extern "C" __global__ void lincomb_f32(float* out, const float* old, double keep, LincombTerms terms, u64 n,
                                       int has_noise, double scale, u64 seed, u64 stream, u64 offset) {
    lincomb<float>(out, old, keep, terms, n, has_noise, scale, seed, stream, offset);
}

extern "C" __global__ void lincomb_f64(double* out, const double* old, double keep, LincombTerms terms, u64 n,
                                       int has_noise, double scale, u64 seed, u64 stream, u64 offset) {
    lincomb<double>(out, old, keep, terms, n, has_noise, scale, seed, stream, offset);
}

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
