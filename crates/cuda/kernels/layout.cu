// Broadcast adds and layout permutations that glue the layer kernels into whole models
// (DiT inference). One thread per output element, grid-stride; pure data movement or one
// add, so f32 arithmetic matches the CPU's f32 operations exactly.

// y[i] += v[(i / block) % period]: a bias over rows (block 1, period = columns), a table
// repeated per batch item (block 1, period = tokens * dim), a value per channel plane of an
// NCHW tensor (block = spatial size, period = channels or batch * channels).
extern "C" __global__ void add_broadcast_f32(float* y, const float* v, u64 n, u64 block, u64 period) {
    GRID_STRIDE(i, n) y[i] = y[i] + v[((u64)i / block) % period];
}

// h[b, t, d] += g[b, d] * f[b, t, d]: adaLN-Zero's gated residual.
extern "C" __global__ void gate_add_f32(float* h, const float* f, const float* g, int B, int T, int D) {
    i64 total = (i64)B * T * D;
    GRID_STRIDE(i, total) {
        int d = (int)(i % D);
        int b = (int)(i / ((i64)T * D));
        // Explicitly rounded: NVRTC would contract a * b + c into an FMA, the CPU rounds twice.
        h[i] = __fadd_rn(h[i], __fmul_rn(g[(i64)b * D + d], f[i]));
    }
}

// Images [B, C, S, S] to patch rows [B, (S/p)^2, C*p*p]; a row lists (c, kh, kw) in the order
// of a Conv2d weight [out, C, p, p], tokens in row-major patch order.
extern "C" __global__ void patch_rows_f32(const float* x, float* out, int B, int C, int S, int P) {
    int g = S / P, row = C * P * P;
    i64 total = (i64)B * g * g * row;
    GRID_STRIDE(i, total) {
        int r = (int)(i % row);
        i64 token = i / row;
        int tj = (int)(token % g), ti = (int)((token / g) % g), b = (int)(token / ((i64)g * g));
        int kw = r % P, kh = (r / P) % P, c = r / (P * P);
        out[i] = x[(((i64)b * C + c) * S + ti * P + kh) * S + tj * P + kw];
    }
}

// The inverse: patch rows [B, (S/p)^2, p*p*C] laid out (kh, kw, c), as DiT's final linear
// layer emits them, back to images [B, C, S, S].
extern "C" __global__ void unpatchify_f32(const float* tokens, float* x, int B, int C, int S, int P) {
    int g = S / P;
    i64 total = (i64)B * C * S * S;
    GRID_STRIDE(i, total) {
        int col = (int)(i % S), rowi = (int)((i / S) % S), c = (int)((i / ((i64)S * S)) % C);
        int b = (int)(i / ((i64)C * S * S));
        int ti = rowi / P, kh = rowi % P, tj = col / P, kw = col % P;
        i64 token = ((i64)b * g + ti) * g + tj;
        x[i] = tokens[token * (P * P * C) + (kh * P + kw) * C + c];
    }
}

// The adjoint of patch_rows_f32, which is its inverse (the patches tile the image): patch
// rows [B, (S/p)^2, C*p*p] back to images [B, C, S, S]. The same index map, written the other
// way: every pixel is written by exactly one thread.
extern "C" __global__ void patch_rows_bwd_f32(const float* rows, float* x, int B, int C, int S, int P) {
    int g = S / P, row = C * P * P;
    i64 total = (i64)B * g * g * row;
    GRID_STRIDE(i, total) {
        int r = (int)(i % row);
        i64 token = i / row;
        int tj = (int)(token % g), ti = (int)((token / g) % g), b = (int)(token / ((i64)g * g));
        int kw = r % P, kh = (r / P) % P, c = r / (P * P);
        x[(((i64)b * C + c) * S + ti * P + kh) * S + tj * P + kw] = rows[i];
    }
}

// The inverse of unpatchify_f32 (DiT's output gradient back to the tokens of its final
// linear layer): images [B, C, S, S] to tokens [B, (S/p)^2, p*p*C] laid out (kh, kw, c).
// The same index map as unpatchify_f32, written the other way.
extern "C" __global__ void patchify_f32(const float* x, float* tokens, int B, int C, int S, int P) {
    int g = S / P;
    i64 total = (i64)B * C * S * S;
    GRID_STRIDE(i, total) {
        int col = (int)(i % S), rowi = (int)((i / S) % S), c = (int)((i / ((i64)S * S)) % C);
        int b = (int)(i / ((i64)C * S * S));
        int ti = rowi / P, kh = rowi % P, tj = col / P, kw = col % P;
        i64 token = ((i64)b * g + ti) * g + tj;
        tokens[token * (P * P * C) + (kh * P + kw) * C + c] = x[i];
    }
}

// [B, T, H*Dh] (heads side by side) to [B*H, T, Dh] (one contiguous matrix per head).
extern "C" __global__ void split_heads_f32(const float* x, float* out, int B, int T, int H, int Dh) {
    i64 total = (i64)B * T * H * Dh;
    GRID_STRIDE(i, total) {
        int e = (int)(i % Dh);
        int t = (int)((i / Dh) % T);
        i64 bh = i / ((i64)Dh * T);
        int h = (int)(bh % H);
        i64 b = bh / H;
        out[i] = x[((b * T + t) * H + h) * Dh + e];
    }
}

// The inverse of split_heads: [B*H, T, Dh] to [B, T, H*Dh].
extern "C" __global__ void merge_heads_f32(const float* x, float* out, int B, int T, int H, int Dh) {
    i64 total = (i64)B * T * H * Dh;
    GRID_STRIDE(i, total) {
        int e = (int)(i % Dh);
        int h = (int)((i / Dh) % H);
        int t = (int)((i / ((i64)Dh * H)) % T);
        i64 b = i / ((i64)Dh * H * T);
        out[i] = x[((b * H + h) * T + t) * Dh + e];
    }
}

// [B, Ca, S] and [B, Cb, S] to [B, Ca + Cb, S], the second multiplied by `scale` (a UNet's
// long skip, concatenated after the decoder's channels).
extern "C" __global__ void concat_channels_f32(const float* a, const float* b, float* out, int B, int Ca, int Cb,
                                               i64 S, float scale) {
    i64 total = (i64)B * (Ca + Cb) * S;
    GRID_STRIDE(i, total) {
        i64 s = i % S;
        int c = (int)((i / S) % (Ca + Cb));
        i64 n = i / (S * (Ca + Cb));
        out[i] = c < Ca ? a[(n * Ca + c) * S + s] : b[(n * Cb + (c - Ca)) * S + s] * scale;
    }
}

// Nearest-neighbour x2 upsampling of [P, H, W] planes to [P, 2H, 2W].
extern "C" __global__ void upsample2_f32(const float* x, float* out, i64 P, int H, int W) {
    i64 total = P * 4 * H * W;
    GRID_STRIDE(i, total) {
        int ox = (int)(i % (2 * W));
        int oy = (int)((i / (2 * W)) % (2 * H));
        i64 p = i / (4 * (i64)H * W);
        out[i] = x[(p * H + oy / 2) * W + ox / 2];
    }
}

// Batched transpose [B, R, C] to [B, C, R].
extern "C" __global__ void transpose_f32(const float* x, float* out, int B, int R, int C) {
    i64 total = (i64)B * R * C;
    GRID_STRIDE(i, total) {
        int r = (int)(i % R);
        int c = (int)((i / R) % C);
        i64 b = i / ((i64)R * C);
        out[i] = x[(b * R + r) * C + c];
    }
}

// The adjoint of upsample2_f32: dx[p, y, x] = the sum of the 2x2 block of dout [P, 2H, 2W]
// that pixel was copied to (f64, rounded once).
extern "C" __global__ void upsample2_bwd_f32(const float* dout, float* dx, i64 P, int H, int W) {
    i64 total = P * H * W;
    GRID_STRIDE(i, total) {
        int x = (int)(i % W);
        int y = (int)((i / W) % H);
        i64 p = i / ((i64)H * W);
        const float* o = dout + (p * 2 * H + 2 * y) * (i64)(2 * W) + 2 * x;
        double acc = (double)o[0] + (double)o[1] + (double)o[2 * W] + (double)o[2 * W + 1];
        dx[i] = (float)acc;
    }
}

// The adjoint of concat_channels_f32: [B, Ca + Cb, S] split into a [B, Ca, S] and
// b [B, Cb, S], the second multiplied by `scale` (the gradient reaching a UNet's long skip).
extern "C" __global__ void split_channels_f32(const float* in, float* a, float* b, int B, int Ca, int Cb, i64 S,
                                              float scale) {
    i64 total = (i64)B * (Ca + Cb) * S;
    GRID_STRIDE(i, total) {
        i64 s = i % S;
        int c = (int)((i / S) % (Ca + Cb));
        i64 n = i / (S * (Ca + Cb));
        if (c < Ca) {
            a[(n * Ca + c) * S + s] = in[i];
        } else {
            b[(n * Cb + (c - Ca)) * S + s] = __fmul_rn(in[i], scale);
        }
    }
}
