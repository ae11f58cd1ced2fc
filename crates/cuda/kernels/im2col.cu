// im2col / col2im for 2-D convolution on NCHW images.
// cols is [N, C*KH*KW, OH*OW]: row (c, ky, kx), column (oy, ox) holds
// x[n, c, oy*stride - pad + ky*dil, ox*stride - pad + kx*dil] (zero outside the image).
// col2im is the adjoint (sums every column entry back into its pixel); it gathers per pixel,
// so it needs no atomics and is deterministic.

extern "C" __global__ void im2col_f32(const float* x, float* cols, int N, int C, int H, int W, int KH, int KW,
                                      int stride, int pad, int dil, int OH, int OW) {
    i64 total = (i64)N * C * KH * KW * OH * OW;
    GRID_STRIDE(idx, total) {
        i64 r = idx;
        int ox = (int)(r % OW); r /= OW;
        int oy = (int)(r % OH); r /= OH;
        int kx = (int)(r % KW); r /= KW;
        int ky = (int)(r % KH); r /= KH;
        int c = (int)(r % C); r /= C;
        int n = (int)r;
        int iy = oy * stride - pad + ky * dil;
        int ix = ox * stride - pad + kx * dil;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = x[(((i64)n * C + c) * H + iy) * W + ix];
        cols[idx] = v;
    }
}

extern "C" __global__ void col2im_f32(const float* cols, float* x, int N, int C, int H, int W, int KH, int KW,
                                      int stride, int pad, int dil, int OH, int OW) {
    i64 total = (i64)N * C * H * W;
    GRID_STRIDE(idx, total) {
        i64 r = idx;
        int ix = (int)(r % W); r /= W;
        int iy = (int)(r % H); r /= H;
        int c = (int)(r % C); r /= C;
        int n = (int)r;
        double acc = 0.0;
        for (int ky = 0; ky < KH; ++ky) {
            int ty = iy + pad - ky * dil;
            if (ty < 0 || ty % stride != 0) continue;
            int oy = ty / stride;
            if (oy >= OH) continue;
            for (int kx = 0; kx < KW; ++kx) {
                int tx = ix + pad - kx * dil;
                if (tx < 0 || tx % stride != 0) continue;
                int ox = tx / stride;
                if (ox >= OW) continue;
                i64 row = ((i64)c * KH + ky) * KW + kx;
                acc += (double)cols[(((i64)n * C * KH * KW + row) * OH + oy) * OW + ox];
            }
        }
        x[idx] = (float)acc;
    }
}
