// The plan P_ij = exp((hf_i + hg_j - c_ij) / eps) of a dense or point-cloud cost:
// its row sums, column sums and <C, P> in one pass (otc_plan_stats), the same pass writing
// the dense plan instead of <C, P> (otc_plan_marginals), and the dense n x m matrix alone
// (otc_plan). For a point cloud the cost is computed on the fly from X (n x d) and the
// transposed targets YT (d x m); for a dense cost X is C (n x m) and YT is not read. Every
// index is checked against n, m and d.
#include "common.cuh"

// Block (32, OTC_RY): warp ty takes rows i0 + ty, i0 + ty + OTC_RY, ... of the row chunk
// blockIdx.y; lane tx takes the OTC_CPT columns jb + tx + 32 c of the column block
// blockIdx.x (coalesced). Row sums: a warp reduction per row, then one atomicAdd per
// (row, column block). Column sums: per-thread registers over the rows, merged across
// the OTC_RY warps in shared memory, then one atomicAdd per (column, row chunk).
// PLAN = false: <C, P>, one atomicAdd per block (P is not written). PLAN = true: every
// entry is stored in P (row-major n x m, coalesced) and cost is not touched. Sums are
// accumulated in double; sh is shared memory of OTC_RY * 32 doubles.
template <typename T, int KIND, bool PLAN>
__device__ void otc_plan_pass(const T* __restrict__ X, const T* __restrict__ YT, int d, T p,
                              const T* __restrict__ hf, const T* __restrict__ hg, T eps,
                              otc_int n, otc_int m, otc_int chunk, double* __restrict__ rows,
                              double* __restrict__ cols, double* __restrict__ cost,
                              T* __restrict__ P, double* sh) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    const otc_int jb = (otc_int)blockIdx.x * (32 * OTC_CPT);
    const otc_int i0 = (otc_int)blockIdx.y * chunk;
    const otc_int i1 = i0 + chunk < n ? i0 + chunk : n;
    const T inv_eps = T(1) / eps;
    double col[OTC_CPT];
#pragma unroll
    for (int c = 0; c < OTC_CPT; ++c) col[c] = 0.0;
    double cp = 0.0;
    for (otc_int i = i0 + ty; i < i1; i += OTC_RY) {  // uniform across the warp
        const T fi = hf[i];
        double row = 0.0;
#pragma unroll
        for (int c = 0; c < OTC_CPT; ++c) {
            const otc_int j = jb + tx + 32 * c;
            if (j < m) {
                const T cij = otc_cost_at<T, KIND>(X, YT, d, p, m, i, j);
                const T e = otc_plan_entry(fi, hg[j], cij, inv_eps);
                const double pij = (double)e;
                row += pij;
                col[c] += pij;
                if (PLAN) {
                    P[i * m + j] = e;
                } else {
                    cp += otc_cost_term(cij, pij);
                }
            }
        }
        row = otc_warp_sum(row);
        if (tx == 0) atomicAdd(rows + i, row);
    }
#pragma unroll
    for (int c = 0; c < OTC_CPT; ++c) {
        sh[ty * 32 + tx] = col[c];
        __syncthreads();
        const otc_int j = jb + tx + 32 * c;
        if (ty == 0 && j < m) {
            double total = sh[tx];
            for (int r = 1; r < OTC_RY; ++r) total += sh[r * 32 + tx];
            atomicAdd(cols + j, total);
        }
        __syncthreads();
    }
    if (!PLAN) {  // a compile-time constant: uniform across the block
        cp = otc_warp_sum(cp);
        if (tx == 0) sh[ty * 32] = cp;
        __syncthreads();
        if (tx == 0 && ty == 0) {
            double total = sh[0];
            for (int r = 1; r < OTC_RY; ++r) total += sh[r * 32];
            atomicAdd(cost, total);
        }
    }
}

template <typename T, int KIND>
__device__ void otc_plan_stats(const T* X, const T* YT, int d, T p, const T* hf, const T* hg,
                               T eps, otc_int n, otc_int m, otc_int chunk, double* rows,
                               double* cols, double* cost, double* sh) {
    otc_plan_pass<T, KIND, false>(X, YT, d, p, hf, hg, eps, n, m, chunk, rows, cols, cost,
                                  nullptr, sh);
}

template <typename T, int KIND>
__device__ void otc_plan_marginals(const T* X, const T* YT, int d, T p, const T* hf,
                                   const T* hg, T eps, otc_int n, otc_int m, otc_int chunk,
                                   double* rows, double* cols, T* P, double* sh) {
    otc_plan_pass<T, KIND, true>(X, YT, d, p, hf, hg, eps, n, m, chunk, rows, cols, nullptr,
                                 P, sh);
}

// One thread per entry (grid-stride loop over the n * m entries, row-major).
template <typename T, int KIND>
__device__ void otc_plan(const T* __restrict__ X, const T* __restrict__ YT, int d, T p,
                         const T* __restrict__ hf, const T* __restrict__ hg, T eps, otc_int n,
                         otc_int m, T* __restrict__ P) {
    const T inv_eps = T(1) / eps;
    const otc_int total = n * m;
    const otc_int stride = (otc_int)gridDim.x * blockDim.x;
    for (otc_int q = (otc_int)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += stride) {
        const otc_int i = q / m, j = q - i * m;
        const T cij = otc_cost_at<T, KIND>(X, YT, d, p, m, i, j);
        P[q] = otc_plan_entry(hf[i], hg[j], cij, inv_eps);
    }
}

#define OTC_ALL_KINDS(BODY, T, ...)                                        \
    switch (kind) {                                                        \
        case OTC_DENSE: BODY<T, OTC_DENSE>(__VA_ARGS__); break;            \
        case OTC_SQEUCLIDEAN: BODY<T, OTC_SQEUCLIDEAN>(__VA_ARGS__); break; \
        case OTC_EUCLIDEAN: BODY<T, OTC_EUCLIDEAN>(__VA_ARGS__); break;    \
        default: BODY<T, OTC_PNORM>(__VA_ARGS__); break;                   \
    }

#define OTC_PLAN(T, SUF)                                                                     \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_plan_stats_##SUF(            \
        const T* X, const T* YT, int d, int kind, T p, const T* hf, const T* hg, T eps,      \
        otc_int n, otc_int m, otc_int chunk, double* rows, double* cols, double* cost) {     \
        __shared__ double sh[OTC_RY * 32];                                                   \
        OTC_ALL_KINDS(otc_plan_stats, T, X, YT, d, p, hf, hg, eps, n, m, chunk, rows, cols,  \
                      cost, sh)                                                              \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_plan_marginals_##SUF(        \
        const T* X, const T* YT, int d, int kind, T p, const T* hf, const T* hg, T eps,      \
        otc_int n, otc_int m, otc_int chunk, double* rows, double* cols, T* P) {             \
        __shared__ double sh[OTC_RY * 32];                                                   \
        OTC_ALL_KINDS(otc_plan_marginals, T, X, YT, d, p, hf, hg, eps, n, m, chunk, rows,    \
                      cols, P, sh)                                                           \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_plan_##SUF(                  \
        const T* X, const T* YT, int d, int kind, T p, const T* hf, const T* hg, T eps,      \
        otc_int n, otc_int m, T* P) {                                                        \
        OTC_ALL_KINDS(otc_plan, T, X, YT, d, p, hf, hg, eps, n, m, P)                        \
    }

OTC_PLAN(float, f32)
OTC_PLAN(double, f64)
