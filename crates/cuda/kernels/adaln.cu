// adaLN modulation (DiT): x is [B, L, D], shift and scale are [B, D] (one row per batch item):
//   y = x * (1 + scale) + shift.
// Backward: dx = dy * (1 + scale), dscale[b, d] = sum_l dy x, dshift[b, d] = sum_l dy.

extern "C" __global__ void adaln_modulate_fwd_f32(const float* x, const float* shift, const float* scale,
                                                  float* y, int B, int L, int D) {
    i64 total = (i64)B * L * D;
    GRID_STRIDE(idx, total) {
        int d = (int)(idx % D);
        int b = (int)(idx / ((i64)L * D));
        i64 p = (i64)b * D + d;
        y[idx] = (float)((double)x[idx] * (1.0 + (double)scale[p]) + (double)shift[p]);
    }
}

extern "C" __global__ void adaln_modulate_bwd_dx_f32(const float* dy, const float* scale, float* dx, int B, int L,
                                                     int D) {
    i64 total = (i64)B * L * D;
    GRID_STRIDE(idx, total) {
        int d = (int)(idx % D);
        int b = (int)(idx / ((i64)L * D));
        dx[idx] = (float)((double)dy[idx] * (1.0 + (double)scale[(i64)b * D + d]));
    }
}

// One thread per (b, d), summing over l in order (deterministic).
extern "C" __global__ void adaln_modulate_bwd_params_f32(const float* dy, const float* x, float* dshift,
                                                         float* dscale, int B, int L, int D) {
    i64 total = (i64)B * D;
    GRID_STRIDE(p, total) {
        int d = (int)(p % D);
        int b = (int)(p / D);
        double ss = 0.0, sh = 0.0;
        for (int l = 0; l < L; ++l) {
            i64 idx = ((i64)b * L + l) * D + d;
            ss += (double)dy[idx] * (double)x[idx];
            sh += (double)dy[idx];
        }
        dshift[p] = (float)sh;
        dscale[p] = (float)ss;
    }
}
