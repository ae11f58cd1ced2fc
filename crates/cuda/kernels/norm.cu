// GroupNorm and LayerNorm, forward and backward. Statistics are accumulated in f64 with a
// two-pass (mean, then centred variance) scheme; one thread block per normalised group/row,
// blockDim.x a power of two <= 1024 with dynamic shared memory of blockDim.x doubles.
//
// GroupNorm: x is [N, C, S] (S = product of spatial dims), C split into G groups of C/G channels;
//   y = (x - mean_{n,g}) * rstd_{n,g} * gamma_c + beta_c, rstd = 1 / sqrt(var + eps).
// LayerNorm: x is [M, D], normalised over D; y = (x - mean_m) * rstd_m * gamma_d + beta_d.
// gamma/beta may be null (identity affine). mean and rstd (f32 [N*G] or [M]) are saved for backward.

extern "C" __global__ void group_norm_fwd_f32(const float* x, const float* gamma, const float* beta, float* y,
                                              float* mean_out, float* rstd_out, int C, int S, int G,
                                              double eps) {
    extern __shared__ double shared[];
    int n = blockIdx.x / G, g = blockIdx.x % G;
    int cpg = C / G;
    i64 count = (i64)cpg * S;
    const float* xg = x + ((i64)n * C + (i64)g * cpg) * S;
    float* yg = y + ((i64)n * C + (i64)g * cpg) * S;
    double acc = 0.0;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) acc += (double)xg[i];
    double mean = block_sum(acc, shared) / (double)count;
    acc = 0.0;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) {
        double d = (double)xg[i] - mean;
        acc += d * d;
    }
    double rstd = 1.0 / sqrt(block_sum(acc, shared) / (double)count + eps);
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) {
        int c = g * cpg + (int)(i / S);
        double v = ((double)xg[i] - mean) * rstd;
        if (gamma != 0) v *= (double)gamma[c];
        if (beta != 0) v += (double)beta[c];
        yg[i] = (float)v;
    }
    if (threadIdx.x == 0) {
        mean_out[blockIdx.x] = (float)mean;
        rstd_out[blockIdx.x] = (float)rstd;
    }
}

// dx for one (n, g) per block:
//   xhat = (x - mean) rstd, g_i = dy_i gamma_c,
//   dx_i = rstd (g_i - mean(g) - xhat_i mean(g xhat)).
extern "C" __global__ void group_norm_bwd_dx_f32(const float* dy, const float* x, const float* gamma,
                                                 const float* mean_in, const float* rstd_in, float* dx, int C,
                                                 int S, int G) {
    extern __shared__ double shared[];
    int n = blockIdx.x / G, g = blockIdx.x % G;
    int cpg = C / G;
    i64 count = (i64)cpg * S;
    i64 base = ((i64)n * C + (i64)g * cpg) * S;
    double mean = (double)mean_in[blockIdx.x], rstd = (double)rstd_in[blockIdx.x];
    double sum_g = 0.0, sum_gx = 0.0;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) {
        int c = g * cpg + (int)(i / S);
        double gi = (double)dy[base + i] * (gamma != 0 ? (double)gamma[c] : 1.0);
        double xhat = ((double)x[base + i] - mean) * rstd;
        sum_g += gi;
        sum_gx += gi * xhat;
    }
    double mg = block_sum(sum_g, shared) / (double)count;
    double mgx = block_sum(sum_gx, shared) / (double)count;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) {
        int c = g * cpg + (int)(i / S);
        double gi = (double)dy[base + i] * (gamma != 0 ? (double)gamma[c] : 1.0);
        double xhat = ((double)x[base + i] - mean) * rstd;
        dx[base + i] = (float)(rstd * (gi - mg - xhat * mgx));
    }
}

// dgamma_c = sum_{n,s} dy xhat, dbeta_c = sum_{n,s} dy; one block per channel (deterministic order).
extern "C" __global__ void group_norm_bwd_params_f32(const float* dy, const float* x, const float* mean_in,
                                                     const float* rstd_in, float* dgamma, float* dbeta, int N,
                                                     int C, int S, int G) {
    extern __shared__ double shared[];
    int c = blockIdx.x;
    int g = c / (C / G);
    double sg = 0.0, sb = 0.0;
    i64 count = (i64)N * S;
    for (i64 j = threadIdx.x; j < count; j += blockDim.x) {
        int n = (int)(j / S);
        i64 s = j % S;
        i64 idx = ((i64)n * C + c) * S + s;
        double xhat = ((double)x[idx] - (double)mean_in[n * G + g]) * (double)rstd_in[n * G + g];
        sg += (double)dy[idx] * xhat;
        sb += (double)dy[idx];
    }
    double tg = block_sum(sg, shared);
    double tb = block_sum(sb, shared);
    if (threadIdx.x == 0) {
        dgamma[c] = (float)tg;
        dbeta[c] = (float)tb;
    }
}

extern "C" __global__ void layer_norm_fwd_f32(const float* x, const float* gamma, const float* beta, float* y,
                                              float* mean_out, float* rstd_out, int D, double eps) {
    extern __shared__ double shared[];
    i64 base = (i64)blockIdx.x * D;
    double acc = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) acc += (double)x[base + i];
    double mean = block_sum(acc, shared) / (double)D;
    acc = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        double d = (double)x[base + i] - mean;
        acc += d * d;
    }
    double rstd = 1.0 / sqrt(block_sum(acc, shared) / (double)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        double v = ((double)x[base + i] - mean) * rstd;
        if (gamma != 0) v *= (double)gamma[i];
        if (beta != 0) v += (double)beta[i];
        y[base + i] = (float)v;
    }
    if (threadIdx.x == 0) {
        mean_out[blockIdx.x] = (float)mean;
        rstd_out[blockIdx.x] = (float)rstd;
    }
}

extern "C" __global__ void layer_norm_bwd_dx_f32(const float* dy, const float* x, const float* gamma,
                                                 const float* mean_in, const float* rstd_in, float* dx, int D) {
    extern __shared__ double shared[];
    i64 base = (i64)blockIdx.x * D;
    double mean = (double)mean_in[blockIdx.x], rstd = (double)rstd_in[blockIdx.x];
    double sum_g = 0.0, sum_gx = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        double gi = (double)dy[base + i] * (gamma != 0 ? (double)gamma[i] : 1.0);
        double xhat = ((double)x[base + i] - mean) * rstd;
        sum_g += gi;
        sum_gx += gi * xhat;
    }
    double mg = block_sum(sum_g, shared) / (double)D;
    double mgx = block_sum(sum_gx, shared) / (double)D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        double gi = (double)dy[base + i] * (gamma != 0 ? (double)gamma[i] : 1.0);
        double xhat = ((double)x[base + i] - mean) * rstd;
        dx[base + i] = (float)(rstd * (gi - mg - xhat * mgx));
    }
}

// dgamma_d = sum_m dy xhat, dbeta_d = sum_m dy; one thread per column, rows in order (deterministic).
extern "C" __global__ void layer_norm_bwd_params_f32(const float* dy, const float* x, const float* mean_in,
                                                     const float* rstd_in, float* dgamma, float* dbeta, int M,
                                                     int D) {
    GRID_STRIDE(d, D) {
        double sg = 0.0, sb = 0.0;
        for (int m = 0; m < M; ++m) {
            i64 idx = (i64)m * D + d;
            double xhat = ((double)x[idx] - (double)mean_in[m]) * (double)rstd_in[m];
            sg += (double)dy[idx] * xhat;
            sb += (double)dy[idx];
        }
        dgamma[d] = (float)sg;
        dbeta[d] = (float)sb;
    }
}
