// Row softmax over the last axis of a [rows, cols] matrix, one block per row, f64 accumulation.
// `scale` multiplies the logits first (attention passes 1/sqrt(D)); blockDim.x a power of two with
// blockDim.x doubles of dynamic shared memory.

extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, int cols, double scale) {
    extern __shared__ double shared[];
    i64 base = (i64)blockIdx.x * cols;
    double m = NEG_INF;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmax(m, scale * (double)x[base + i]);
    m = block_max(m, shared);
    double acc = 0.0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) acc += exp(scale * (double)x[base + i] - m);
    double total = block_sum(acc, shared);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        y[base + i] = (float)(exp(scale * (double)x[base + i] - m) / total);
}

// dx = scale * y * (dy - sum_j dy_j y_j)
extern "C" __global__ void softmax_bwd_f32(const float* dy, const float* y, float* dx, int cols, double scale) {
    extern __shared__ double shared[];
    i64 base = (i64)blockIdx.x * cols;
    double acc = 0.0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) acc += (double)dy[base + i] * (double)y[base + i];
    double dot = block_sum(acc, shared);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        dx[base + i] = (float)(scale * (double)y[base + i] * ((double)dy[base + i] - dot));
}
