// One AdamW step per element (decoupled weight decay, bias correction), in f64 with explicitly
// rounded operations in the order of diffusion-train's AdamW::step, so an f32 parameter is
// rounded exactly as on the CPU:
//   mean = b1 m + (1 - b1) g;   var = b2 v + (1 - b2) g g
//   p = p decay - step_size mean / (sqrt(var) / bias2_sqrt + eps)
// The host computes c1 = 1 - b1, c2 = 1 - b2, bias2_sqrt = sqrt(1 - b2^k),
// step_size = lr / (1 - b1^k) and decay = 1 - lr wd, as the CPU optimizer does.

extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, u64 n, double b1, double c1,
                                     double b2, double c2, double bias2_sqrt, double eps, double step_size,
                                     double decay) {
    GRID_STRIDE(i, n) {
        double gi = (double)g[i];
        double mean = __dadd_rn(__dmul_rn(b1, (double)m[i]), __dmul_rn(c1, gi));
        double var = __dadd_rn(__dmul_rn(b2, (double)v[i]), __dmul_rn(__dmul_rn(c2, gi), gi));
        double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn(var), bias2_sqrt), eps);
        double upd = __ddiv_rn(__dmul_rn(step_size, mean), denom);
        p[i] = __double2float_rn(__dsub_rn(__dmul_rn((double)p[i], decay), upd));
        m[i] = __double2float_rn(mean);
        v[i] = __double2float_rn(var);
    }
}
