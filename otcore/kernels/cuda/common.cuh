// Shared device code of the otcore CUDA kernels: numeric helpers, the online
// log-sum-exp accumulator and the ground costs.
//
// Written for NVRTC (no host headers). The launch constants OTC_* are passed with -D by
// otcore.kernels.cuda.launch.compile_options(), the single source of their values.
#ifndef OTCORE_COMMON_CUH
#define OTCORE_COMMON_CUH

#if !defined(OTC_BLOCK) || !defined(OTC_RY) || !defined(OTC_UNROLL) || !defined(OTC_TILE) \
    || !defined(OTC_ANY_TILE) || !defined(OTC_ANY_DIMS) || !defined(OTC_CPT)
#error "compile with the -D options of otcore.kernels.cuda.launch.compile_options()"
#endif

// Cost codes (0: X is a dense cost matrix) come from the cost table otcore.costs, also
// passed with -D.
#if !defined(OTC_DENSE) || !defined(OTC_SQEUCLIDEAN) || !defined(OTC_EUCLIDEAN) \
    || !defined(OTC_PNORM)
#error "compile with the -D options of otcore.kernels.cuda.launch.compile_options()"
#endif

#define OTC_LOG2E 1.4426950408889634
#define OTC_LN2 0.6931471805599453
#define OTC_FULL_MASK 0xffffffffu
// Unrolled steps (of OTC_UNROLL pushes each) between two folds of an OtcLse.
#define OTC_FOLD 4

typedef long long otc_int;

// Overloads so that templates pick the float or double math function.
__device__ __forceinline__ float otc_exp2(float x) {
#if defined(__CUDA_ARCH__)
    // The bare special-function instruction (about 2 ulp, like exp2f, which adds a
    // rescaling for subnormal results): results below 2^-126 flush to 0, which is far
    // below the rounding of the sums (>= 1) they are added to.
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    return exp2f(x);
#endif
}
__device__ __forceinline__ double otc_exp2(double x) { return exp2(x); }
__device__ __forceinline__ float otc_exp(float x) { return expf(x); }
__device__ __forceinline__ double otc_exp(double x) { return exp(x); }
__device__ __forceinline__ float otc_log2(float x) { return log2f(x); }
__device__ __forceinline__ double otc_log2(double x) { return log2(x); }
__device__ __forceinline__ float otc_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double otc_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float otc_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double otc_abs(double x) { return fabs(x); }
__device__ __forceinline__ float otc_pow(float x, float p) { return powf(x, p); }
__device__ __forceinline__ double otc_pow(double x, double p) { return pow(x, p); }
__device__ __forceinline__ float otc_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double otc_max(double a, double b) { return fmax(a, b); }

// Most negative finite value: the start of a running maximum. Unlike -inf it keeps
// every difference (z - max) and every merge free of inf - inf, so -inf entries of z
// (zero weights) need no branch.
template <typename T> __device__ __forceinline__ T otc_lowest();
template <> __device__ __forceinline__ float otc_lowest<float>() { return -3.402823466e+38f; }
template <> __device__ __forceinline__ double otc_lowest<double>() {
    return -1.7976931348623157e+308;
}

// Online log-sum-exp of base-2 exponents z (z = (h - c) log2(e) / eps).
//
// push() is the one-exp update: with d = z - m, e = 2^-|d|; a new maximum rescales the
// block sum by e and adds 1, otherwise e is added. fold() moves the block sum into the
// total (one exp2 per block), so long reductions add O(block) terms at a time and the
// rounding error grows with the block length, not with the whole row. After fold(),
// (M, S) holds the result: sum_j 2^z_j = 2^M S.
template <typename T>
struct OtcLse {
    T m, s;  // running maximum and the sum of the current block, relative to m
    T M, S;  // maximum and sum of the folded blocks (M <= m)

    __device__ __forceinline__ void init() {
        m = M = otc_lowest<T>();
        s = S = T(0);
    }
    __device__ __forceinline__ void push(T z) {
        const T d = z - m;
        const T e = otc_exp2(-otc_abs(d));
        const bool up = d > T(0);
        s = up ? s * e + T(1) : s + e;
        m = up ? z : m;
    }
    __device__ __forceinline__ void fold() {
        S = S * otc_exp2(M - m) + s;
        M = m;
        s = T(0);
    }
    // Merge another folded accumulator (M2, S2) into (M, S).
    __device__ __forceinline__ void merge(T M2, T S2) {
        const T top = otc_max(M, M2);
        S = S * otc_exp2(M - top) + S2 * otc_exp2(M2 - top);
        M = top;
    }
    // Merge the folded accumulators of the 32 lanes of a warp (all lanes get the result).
    __device__ __forceinline__ void warp_merge() {
        for (int off = 16; off > 0; off >>= 1) {
            const T M2 = __shfl_xor_sync(OTC_FULL_MASK, M, off);
            const T S2 = __shfl_xor_sync(OTC_FULL_MASK, S, off);
            merge(M2, S2);
        }
    }
};

// Row i of a dense cost for the warp reductions: c(j) = row[j].
template <typename T>
struct OtcDenseRow {
    const T* __restrict__ row;
    __device__ __forceinline__ T operator()(otc_int j) const { return row[j]; }
};

// Push z_j = (h[j] - cost(j)) log2(e) / eps (c2 = log2(e) / eps) for j0 <= j < j1 into a
// lane's accumulator: the lanes of a warp stride over the columns, OTC_UNROLL loads in
// flight per lane, and the block sum is folded every OTC_FOLD unrolled steps (`step`
// counts them across calls, so a row of several ranges folds as one long range).
template <typename T, typename Cost>
__device__ __forceinline__ void otc_warp_push(OtcLse<T>& acc, int& step, const Cost& cost,
                                              const T* __restrict__ h, otc_int j0,
                                              otc_int j1, T c2, int lane) {
    for (otc_int jb = j0; jb < j1; jb += 32 * OTC_UNROLL) {
#pragma unroll
        for (int u = 0; u < OTC_UNROLL; ++u) {
            const otc_int j = jb + u * 32 + lane;
            if (j < j1) acc.push((h[j] - cost(j)) * c2);
        }
        if (++step == OTC_FOLD) {
            acc.fold();
            step = 0;
        }
    }
}

// One warp's log-sum-exp of z_j = (h[j] - row[j]) log2(e) / eps over j0 <= j < j1
// (otc_warp_push); every lane gets the merged (M, S).
template <typename T>
__device__ __forceinline__ OtcLse<T> otc_warp_row_lse(const T* __restrict__ row,
                                                     const T* __restrict__ h, otc_int j0,
                                                     otc_int j1, T c2, int lane) {
    OtcLse<T> acc;
    acc.init();
    int step = 0;
    otc_warp_push(acc, step, OtcDenseRow<T>{row}, h, j0, j1, c2, lane);
    acc.fold();
    acc.warp_merge();
    return acc;
}

// Sum of a double over the 32 lanes of a warp (all lanes get the result).
__device__ __forceinline__ double otc_warp_sum(double v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(OTC_FULL_MASK, v, off);
    return v;
}

// A plan entry P_ij = exp((f_i + g_j - c_ij) / eps) (inv_eps = 1 / eps).
template <typename T>
__device__ __forceinline__ T otc_plan_entry(T fi, T gj, T c, T inv_eps) {
    return otc_exp((fi + gj - c) * inv_eps);
}

// The term c_ij P_ij of <C, P>, in double: 0 where P_ij = 0 (a forbidden pair of a dense
// cost has c = inf, and 0 * inf would be NaN).
template <typename T>
__device__ __forceinline__ double otc_cost_term(T c, double pij) {
    return pij > 0.0 ? (double)c * pij : 0.0;
}

// -eps * log(2^M S): the softmin value of a folded accumulator (+inf when S == 0).
// Computed in double: M is of the order of |potential| / eps, and in float32 the sum
// M + log2(S) would round at ~1e-4 of eps (once per output, so the cost is nil).
template <typename T>
__device__ __forceinline__ T otc_lse_value(T M, T S, T eps) {
    return T(-double(eps) * OTC_LN2 * (double(M) + log2(double(S))));
}

// Store a softmin result: the final value when the reduction has one part, otherwise the
// partial (M, S) of part `part` for otc_lse_merge.
template <typename T>
__device__ __forceinline__ void otc_lse_store(T M, T S, T eps, otc_int t, otc_int len,
                                              int part, int parts, T* out, T* part_m,
                                              T* part_s) {
    if (parts == 1) {
        out[t] = otc_lse_value(M, S, eps);
    } else {
        part_m[(otc_int)part * len + t] = M;
        part_s[(otc_int)part * len + t] = S;
    }
}

// Ground cost, accumulated one coordinate at a time, then finished:
// sqeuclidean sum t^2, euclidean sqrt(sum t^2), pnorm sum |t|^p / p.
template <typename T, int KIND>
__device__ __forceinline__ T otc_term(T t, T p) {
    if (KIND == OTC_PNORM) return otc_pow(otc_abs(t), p);
    return t * t;
}
template <typename T, int KIND>
__device__ __forceinline__ T otc_finish(T acc, T p) {
    if (KIND == OTC_EUCLIDEAN) return otc_sqrt(acc);
    if (KIND == OTC_PNORM) return acc / p;
    return acc;
}

// Gradient of the ground cost in one argument, per coordinate of t = y - x (the gradient
// in y; in x it is the opposite), up to a factor common to all coordinates:
// sqeuclidean 2 t (factor 2), euclidean t / c (factor 1 / c, and 0 at c = 0: the
// minimal-norm subgradient), pnorm sign(t) |t|^(p - 1) (factor 1; 0 at t = 0).
template <typename T, int KIND>
__device__ __forceinline__ T otc_grad_term(T t, T p) {
    if (KIND == OTC_PNORM) {
        const T g = otc_pow(otc_abs(t), p - T(1));
        return t > T(0) ? g : (t < T(0) ? -g : T(0));
    }
    return t;
}

// The cost kind of a point cloud is uniform over the grid: a kernel dispatches it once,
// outside its loops, to BODY<TARGS..., KIND>(...), with TARGS a parenthesized list of the
// leading template arguments: OTC_BY_KIND(otc_f, (T, 3), args...) calls
// otc_f<T, 3, KIND>(args...). Shared memory is declared in the kernel, once for all kinds.
#define OTC_UNPAREN(...) __VA_ARGS__
#define OTC_BY_KIND(BODY, TARGS, ...)                                                     \
    switch (kind) {                                                                       \
        case OTC_SQEUCLIDEAN: BODY<OTC_UNPAREN TARGS, OTC_SQEUCLIDEAN>(__VA_ARGS__); break; \
        case OTC_EUCLIDEAN: BODY<OTC_UNPAREN TARGS, OTC_EUCLIDEAN>(__VA_ARGS__); break;     \
        default: BODY<OTC_UNPAREN TARGS, OTC_PNORM>(__VA_ARGS__); break;                    \
    }

// Cost c(i, j) read from global memory: the dense matrix X (n x m, row-major), or
// source point X[i, :] (n x d) against target column YT[:, j] (d x m).
template <typename T, int KIND>
__device__ __forceinline__ T otc_cost_at(const T* __restrict__ X, const T* __restrict__ YT,
                                         int d, T p, otc_int m, otc_int i, otc_int j) {
    if (KIND == OTC_DENSE) return X[i * m + j];
    T acc = T(0);
    for (int k = 0; k < d; ++k) acc += otc_term<T, KIND>(X[i * d + k] - YT[k * m + j], p);
    return otc_finish<T, KIND>(acc, p);
}

// Row i of a point-cloud cost for the warp reductions: c(j) = otc_cost_at(i, j).
template <typename T, int KIND>
struct OtcCloudRow {
    const T* __restrict__ X;
    const T* __restrict__ YT;
    int d;
    T p;
    otc_int m, i;
    __device__ __forceinline__ T operator()(otc_int j) const {
        return otc_cost_at<T, KIND>(X, YT, d, p, m, i, j);
    }
};

#endif  // OTCORE_COMMON_CUH
