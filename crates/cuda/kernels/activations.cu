// Elementwise activations, forward and backward (f32 storage, f64 arithmetic per element).
//   silu(x)  = x * sigmoid(x)
//   gelu(x)  = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))     (the "tanh" approximation)
// Backward kernels take the upstream gradient dy and the forward input x and write dx.

__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

extern "C" __global__ void silu_fwd_f32(const float* x, float* y, u64 n) {
    GRID_STRIDE(i, n) {
        double v = (double)x[i];
        y[i] = (float)(v * sigmoid(v));
    }
}

extern "C" __global__ void silu_bwd_f32(const float* dy, const float* x, float* dx, u64 n) {
    GRID_STRIDE(i, n) {
        double v = (double)x[i];
        double s = sigmoid(v);
        dx[i] = (float)((double)dy[i] * s * (1.0 + v * (1.0 - s)));
    }
}

#define GELU_K 0.7978845608028654  // sqrt(2 / pi)
#define GELU_C 0.044715

extern "C" __global__ void gelu_tanh_fwd_f32(const float* x, float* y, u64 n) {
    GRID_STRIDE(i, n) {
        double v = (double)x[i];
        double u = GELU_K * (v + GELU_C * v * v * v);
        y[i] = (float)(0.5 * v * (1.0 + tanh(u)));
    }
}

extern "C" __global__ void gelu_tanh_bwd_f32(const float* dy, const float* x, float* dx, u64 n) {
    GRID_STRIDE(i, n) {
        double v = (double)x[i];
        double u = GELU_K * (v + GELU_C * v * v * v);
        double t = tanh(u);
        double du = GELU_K * (1.0 + 3.0 * GELU_C * v * v);
        double d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du;
        dx[i] = (float)((double)dy[i] * d);
    }
}
