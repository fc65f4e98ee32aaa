// Point-cloud kernels beyond the softmin: the dense cost matrix (otc_cost_matrix) and the
// plan-weighted gradient of the cost in the target points (otc_cost_grad_*), which never
// forms the plan:
//
//     G_j = sum_i P_ij grad_y c(x_i, y_j),   P_ij = exp((hf_i + hg_j - c(x_i, y_j)) / eps).
//
// One thread per target point j; the source points i of the block's chunk (blockIdx.y)
// stream through shared memory in tiles. For each pair the cost comes first (the helpers
// of common.cuh, as in the softmin kernels), then the weight P_ij (divided by c for the
// Euclidean cost, 0 at c = 0), then the weighted gradient terms (otc_grad_term). Terms
// are summed in T over a tile and the tile sums in double; the sums of a chunk are added
// to GT (d x m, double, zeroed by the caller; row k holds coordinate k, so a warp's
// additions are coalesced) with atomicAdd. Every index is checked against n, m and d.
#include "common.cuh"

// The common factor of otc_grad_term: 2 for sqeuclidean (the 1 / c of the Euclidean
// cost is folded into the weight).
template <int KIND>
__device__ __forceinline__ double otc_grad_factor() {
    return KIND == OTC_SQEUCLIDEAN ? 2.0 : 1.0;
}

// The weight of a pair: P_ij, divided by c for the Euclidean cost (0 where c = 0).
template <typename T, int KIND>
__device__ __forceinline__ T otc_grad_weight(T hsum, T c, T inv_eps) {
    const T w = otc_exp((hsum - c) * inv_eps);
    if (KIND == OTC_EUCLIDEAN) return c > T(0) ? w / c : T(0);
    return w;
}

// Dimension D known at compile time: the target's coordinates in registers; tiles of
// OTC_TILE source points, each stored with its hf as D + 1 consecutive values (as in
// otc_softmin_cloud_fixed). Y: targets (m x D), X: sources (n x D); sh: shared memory of
// OTC_TILE * (D + 1) entries.
template <typename T, int D, int KIND>
__device__ void otc_cost_grad_fixed(const T* __restrict__ Y, const T* __restrict__ X,
                                    const T* __restrict__ hg, const T* __restrict__ hf, T p,
                                    T eps, otc_int m, otc_int n, otc_int chunk,
                                    double* __restrict__ GT, T* sh) {
    const otc_int j = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = j < m;
    T y[D];
#pragma unroll
    for (int k = 0; k < D; ++k) y[k] = active ? Y[j * D + k] : T(0);
    const T gj = active ? hg[j] : T(0);
    const T inv_eps = T(1) / eps;
    const otc_int i0 = (otc_int)blockIdx.y * chunk;
    const otc_int i1 = i0 + chunk < n ? i0 + chunk : n;
    double acc[D];
#pragma unroll
    for (int k = 0; k < D; ++k) acc[k] = 0.0;
    for (otc_int t0 = i0; t0 < i1; t0 += OTC_TILE) {
        const int len = (int)(i1 - t0 < OTC_TILE ? i1 - t0 : OTC_TILE);
        __syncthreads();  // the previous tile is consumed
        for (int q = threadIdx.x; q < len * (D + 1); q += blockDim.x) {
            const int ii = q / (D + 1), k = q % (D + 1);
            sh[q] = k < D ? X[(t0 + ii) * D + k] : hf[t0 + ii];
        }
        __syncthreads();
        T tile[D];
#pragma unroll
        for (int k = 0; k < D; ++k) tile[k] = T(0);
#pragma unroll 4
        for (int ii = 0; ii < len; ++ii) {
            const T* xh = sh + ii * (D + 1);
            T t[D];
            T c = T(0);
#pragma unroll
            for (int k = 0; k < D; ++k) {
                t[k] = y[k] - xh[k];
                c += otc_term<T, KIND>(t[k], p);
            }
            const T w = otc_grad_weight<T, KIND>(gj + xh[D], otc_finish<T, KIND>(c, p), inv_eps);
#pragma unroll
            for (int k = 0; k < D; ++k) tile[k] += w * otc_grad_term<T, KIND>(t[k], p);
        }
#pragma unroll
        for (int k = 0; k < D; ++k) acc[k] += (double)tile[k];
    }
    if (active) {
#pragma unroll
        for (int k = 0; k < D; ++k)
            atomicAdd(GT + (otc_int)k * m + j, otc_grad_factor<KIND>() * acc[k]);
    }
}

// Any dimension d: the target's coordinates are read from the transposed targets YT
// (d x m; coalesced across threads). Tiles of OTC_ANY_TILE source points are staged
// through shared memory OTC_ANY_DIMS coordinates at a time (as in otc_softmin_cloud_any),
// twice: once for the costs, held in registers and turned into weights, then for the
// gradient terms, the last chunk of the first pass first (it is still staged). A tile's
// sum of each coordinate is added to GT right away. X: sources (n x d); sh_x, sh_h: shared
// memory of OTC_ANY_TILE * OTC_ANY_DIMS and OTC_ANY_TILE entries.
template <typename T, int KIND>
__device__ void otc_cost_grad_any(const T* __restrict__ YT, const T* __restrict__ X,
                                  const T* __restrict__ hg, const T* __restrict__ hf, int d,
                                  T p, T eps, otc_int m, otc_int n, otc_int chunk,
                                  double* __restrict__ GT, T* sh_x, T* sh_h) {
    const otc_int j = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = j < m;
    const T gj = active ? hg[j] : T(0);
    const T inv_eps = T(1) / eps;
    const otc_int i0 = (otc_int)blockIdx.y * chunk;
    const otc_int i1 = i0 + chunk < n ? i0 + chunk : n;
    const int last = ((d - 1) / OTC_ANY_DIMS) * OTC_ANY_DIMS;  // start of the last chunk
    for (otc_int t0 = i0; t0 < i1; t0 += OTC_ANY_TILE) {
        const int len = (int)(i1 - t0 < OTC_ANY_TILE ? i1 - t0 : OTC_ANY_TILE);
        T w[OTC_ANY_TILE];  // the tile's costs, then its weights
#pragma unroll
        for (int ii = 0; ii < OTC_ANY_TILE; ++ii) w[ii] = T(0);
        for (int pass = 0; pass < 2; ++pass) {
            for (int c0 = 0; c0 <= last; c0 += OTC_ANY_DIMS) {
                const int k0 = pass == 0 ? c0 : last - c0;  // the second pass runs backwards
                const int kl = d - k0 < OTC_ANY_DIMS ? d - k0 : OTC_ANY_DIMS;
                if (pass == 0 || k0 != last) {  // stage the chunk (the last one already is)
                    __syncthreads();  // the previous chunk (and hf tile) is consumed
                    for (int q = threadIdx.x; q < OTC_ANY_TILE * OTC_ANY_DIMS;
                         q += blockDim.x) {
                        const int ii = q / OTC_ANY_DIMS, kk = q % OTC_ANY_DIMS;
                        sh_x[q] = (ii < len && kk < kl) ? X[(t0 + ii) * d + k0 + kk] : T(0);
                    }
                    if (pass == 0 && k0 == 0)
                        for (int q = threadIdx.x; q < len; q += blockDim.x) sh_h[q] = hf[t0 + q];
                    __syncthreads();
                }
                for (int kk = 0; kk < kl; ++kk) {
                    const otc_int k = k0 + kk;
                    const T yk = active ? YT[k * m + j] : T(0);
                    if (pass == 0) {
#pragma unroll
                        for (int ii = 0; ii < OTC_ANY_TILE; ++ii)
                            w[ii] += otc_term<T, KIND>(yk - sh_x[ii * OTC_ANY_DIMS + kk], p);
                    } else {
                        T g = T(0);
#pragma unroll
                        for (int ii = 0; ii < OTC_ANY_TILE; ++ii)
                            if (ii < len)
                                g += w[ii] * otc_grad_term<T, KIND>(
                                                 yk - sh_x[ii * OTC_ANY_DIMS + kk], p);
                        if (active)
                            atomicAdd(GT + k * m + j, otc_grad_factor<KIND>() * (double)g);
                    }
                }
            }
            if (pass == 0) {
#pragma unroll
                for (int ii = 0; ii < OTC_ANY_TILE; ++ii)
                    w[ii] = ii < len ? otc_grad_weight<T, KIND>(
                                           gj + sh_h[ii], otc_finish<T, KIND>(w[ii], p), inv_eps)
                                     : T(0);
            }
        }
    }
}

// c(x_i, y_j) into the row-major C (n x m): one thread per entry, a grid-stride loop,
// with the arithmetic of otc_cost_at (that of the on-the-fly kernels).
template <typename T, int KIND>
__device__ void otc_cost_matrix(const T* __restrict__ X, const T* __restrict__ YT, int d, T p,
                                otc_int n, otc_int m, T* __restrict__ C) {
    const otc_int total = n * m;
    const otc_int stride = (otc_int)gridDim.x * blockDim.x;
    for (otc_int q = (otc_int)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += stride) {
        const otc_int i = q / m, j = q - i * m;
        C[q] = otc_cost_at<T, KIND>(X, YT, d, p, m, i, j);
    }
}

#define OTC_GRAD_FIXED(T, SUF, D)                                                          \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_cost_grad_d##D##_##SUF(    \
        const T* Y, const T* X, const T* hg, const T* hf, int kind, T p, T eps, otc_int m, \
        otc_int n, otc_int chunk, double* GT) {                                            \
        alignas(16) __shared__ T sh[OTC_TILE * (D + 1)];                                   \
        OTC_BY_KIND(otc_cost_grad_fixed, (T, D), Y, X, hg, hf, p, eps, m, n, chunk, GT, sh) \
    }

#define OTC_CLOUD(T, SUF)                                                                    \
    OTC_GRAD_FIXED(T, SUF, 1)                                                                \
    OTC_GRAD_FIXED(T, SUF, 2)                                                                \
    OTC_GRAD_FIXED(T, SUF, 3)                                                                \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_cost_grad_any_##SUF(         \
        const T* YT, const T* X, const T* hg, const T* hf, int d, int kind, T p, T eps,      \
        otc_int m, otc_int n, otc_int chunk, double* GT) {                                   \
        __shared__ T sh_x[OTC_ANY_TILE * OTC_ANY_DIMS];                                      \
        __shared__ T sh_h[OTC_ANY_TILE];                                                     \
        OTC_BY_KIND(otc_cost_grad_any, (T), YT, X, hg, hf, d, p, eps, m, n, chunk, GT, sh_x, \
                    sh_h)                                                                    \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_cost_matrix_##SUF(           \
        const T* X, const T* YT, int d, int kind, T p, otc_int n, otc_int m, T* C) {         \
        OTC_BY_KIND(otc_cost_matrix, (T), X, YT, d, p, n, m, C)                              \
    }

OTC_CLOUD(float, f32)
OTC_CLOUD(double, f64)
