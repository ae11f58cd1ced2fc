// Reductions and glue of the backward passes (training on the device). One thread, or one
// block, per output; inputs summed in f64 in a fixed order, so results repeat run to run.

// sums[c] = sum_r x[r, c] for x [R, C] (a bias gradient). One block per column: each thread
// adds rows threadIdx.x, threadIdx.x + blockDim.x, ... in order, then a fixed tree adds the
// threads' partials. blockDim.x a power of two with blockDim.x doubles of shared memory.
extern "C" __global__ void column_sums_f32(const float* x, float* sums, int R, int C) {
    extern __shared__ double shared[];
    int c = blockIdx.x;
    double acc = 0.0;
    for (int r = threadIdx.x; r < R; r += blockDim.x) acc += (double)x[(i64)r * C + c];
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0) sums[c] = (float)total;
}

// Backward of gate_add_f32 (h[b, t, d] += g[b, d] f[b, t, d]) for the gated branch:
//   df[b, t, d] = dh[b, t, d] g[b, d].
extern "C" __global__ void gate_add_bwd_df_f32(const float* dh, const float* g, float* df, int B, int T, int D) {
    i64 total = (i64)B * T * D;
    GRID_STRIDE(i, total) {
        int d = (int)(i % D);
        int b = (int)(i / ((i64)T * D));
        df[i] = (float)((double)dh[i] * (double)g[(i64)b * D + d]);
    }
}

//   dg[b, d] = sum_t dh[b, t, d] f[b, t, d], one thread per (b, d), t in order.
extern "C" __global__ void gate_add_bwd_gate_f32(const float* dh, const float* f, float* dg, int B, int T,
                                                 int D) {
    i64 total = (i64)B * D;
    GRID_STRIDE(p, total) {
        int d = (int)(p % D);
        int b = (int)(p / D);
        double acc = 0.0;
        for (int t = 0; t < T; ++t) {
            i64 idx = ((i64)b * T + t) * D + d;
            acc += (double)dh[idx] * (double)f[idx];
        }
        dg[p] = (float)acc;
    }
}

// sums[c] = sum_{n, s} x[n, c, s] for x [N, C, S]: a convolution's bias gradient (N = batch),
// or with N = 1 and C = batch * channels the sum of each channel plane (the gradient of a
// value added to a whole plane, as a UNet's time embedding). One block per c: thread t adds
// j = t, t + blockDim.x, ... (j = n * S + s) in order, then a fixed tree adds the partials.
extern "C" __global__ void channel_sums_f32(const float* x, float* sums, int N, int C, i64 S) {
    extern __shared__ double shared[];
    int c = blockIdx.x;
    i64 count = (i64)N * S;
    double acc = 0.0;
    for (i64 j = threadIdx.x; j < count; j += blockDim.x) {
        i64 n = j / S, s = j % S;
        acc += (double)x[(n * C + c) * S + s];
    }
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0) sums[c] = (float)total;
}

// out[i] = sum_b x[b, i] for x [B, L], b in order: per-image weight gradients summed over
// the batch. One thread per i (reads of neighbouring threads are contiguous).
extern "C" __global__ void batch_sums_f32(const float* x, float* out, int B, i64 L) {
    GRID_STRIDE(i, L) {
        double acc = 0.0;
        for (int b = 0; b < B; ++b) acc += (double)x[(i64)b * L + i];
        out[i] = (float)acc;
    }
}
