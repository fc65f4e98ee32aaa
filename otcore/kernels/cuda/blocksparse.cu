// Block-sparse (truncated) kernels of multiscale Sinkhorn on clustered point clouds: the
// softmin, the plan's sums and <C, P>, and plan products, over the kept pairs of clusters
// only (every other pair is absent: its plan entry is 0, as if its cost were +inf).
//
// Both clouds are sorted by cluster, so a cluster is a contiguous range of points. Sorted
// row i (of cluster rc[i]) interacts with the sorted columns lo[r] <= j < hi[r] for
// run_ptr[rc[i]] <= r < run_ptr[rc[i] + 1] (adjacent kept clusters merged into one run:
// otcore.backends.array_api.block_runs). Reductions over the columns of the plan use the
// same kernels on the swapped clouds and the transposed runs (every ground cost is
// symmetric), so each direction of a Sinkhorn iteration is one launch.
//
// Rows (X, n x d) against columns (YT, the transposed column points, d x m), the cost on
// the fly (otc_cost_at, as the dense point-cloud kernels); one warp per row, block
// (32, OTC_RY): lanes stride over the columns of each run (a warp reads YT[k, j..j+31]:
// coalesced; the rows of a cluster read the same columns, which stay in cache). Rows are
// the threads' only grid dimension: no reduction is split, no merge launch. The runs come
// from the layout (0 <= lo <= hi <= m) and every row index is checked against n: no read
// out of bounds.
#include "common.cuh"

// Output columns of otc_block_apply per pass over a row's runs (their sums in registers).
#define OTC_APPLY_COLS 4

// out_i = -eps log sum_{j kept} exp((h_j - c_ij) / eps): the online log-sum-exp of
// common.cuh over the row's runs, merged across the warp once (+inf without kept mass).
template <typename T, int KIND>
__device__ void otc_block_softmin(const T* __restrict__ X, const T* __restrict__ YT, int d,
                                  T p, const otc_int* __restrict__ rc,
                                  const otc_int* __restrict__ run_ptr,
                                  const otc_int* __restrict__ lo,
                                  const otc_int* __restrict__ hi, const T* __restrict__ h,
                                  T eps, otc_int n, otc_int m, T* __restrict__ out) {
    const otc_int i = (otc_int)blockIdx.x * blockDim.y + threadIdx.y;
    if (i >= n) return;  // the whole warp shares i
    const int lane = threadIdx.x;
    const T c2 = T(OTC_LOG2E) / eps;
    const OtcCloudRow<T, KIND> cost{X, YT, d, p, m, i};
    OtcLse<T> acc;
    acc.init();
    int step = 0;
    const otc_int r1 = run_ptr[rc[i] + 1];
    for (otc_int r = run_ptr[rc[i]]; r < r1; ++r)
        otc_warp_push(acc, step, cost, h, lo[r], hi[r], c2, lane);
    acc.fold();
    acc.warp_merge();
    if (lane == 0) out[i] = otc_lse_value(acc.M, acc.S, eps);
}

// sums_i = sum_{j kept} P_ij and costs_i = sum_{j kept} c_ij P_ij, with
// P_ij = exp((h1_i + h2_j - c_ij) / eps), accumulated in double: the plan's row sums and
// the rows' shares of <C, P> (on the transposed runs, with h1 and h2 swapped, its column
// sums). No atomics: the sums are the same run to run.
template <typename T, int KIND>
__device__ void otc_block_sums(const T* __restrict__ X, const T* __restrict__ YT, int d, T p,
                               const otc_int* __restrict__ rc,
                               const otc_int* __restrict__ run_ptr,
                               const otc_int* __restrict__ lo, const otc_int* __restrict__ hi,
                               const T* __restrict__ h1, const T* __restrict__ h2, T eps,
                               otc_int n, otc_int m, double* __restrict__ sums,
                               double* __restrict__ costs) {
    const otc_int i = (otc_int)blockIdx.x * blockDim.y + threadIdx.y;
    if (i >= n) return;
    const int lane = threadIdx.x;
    const T inv_eps = T(1) / eps;
    const OtcCloudRow<T, KIND> cost{X, YT, d, p, m, i};
    const T fi = h1[i];
    double row = 0.0, cp = 0.0;
    const otc_int r1 = run_ptr[rc[i] + 1];
    for (otc_int r = run_ptr[rc[i]]; r < r1; ++r) {
        for (otc_int j = lo[r] + lane; j < hi[r]; j += 32) {
            const T cij = cost(j);
            const double pij = (double)otc_plan_entry(fi, h2[j], cij, inv_eps);
            row += pij;
            cp += otc_cost_term(cij, pij);
        }
    }
    row = otc_warp_sum(row);
    cp = otc_warp_sum(cp);
    if (lane == 0) {
        sums[i] = row;
        costs[i] = cp;
    }
}

// out[i, k] = sum_{j kept} P_ij V[j, k] (V: m x nk, out: n x nk, row-major; P as in
// otc_block_sums), each product and sum in double: OTC_APPLY_COLS output columns per pass
// over the row's runs (plan entries recomputed for each pass).
template <typename T, int KIND>
__device__ void otc_block_apply(const T* __restrict__ X, const T* __restrict__ YT, int d,
                                T p, const otc_int* __restrict__ rc,
                                const otc_int* __restrict__ run_ptr,
                                const otc_int* __restrict__ lo, const otc_int* __restrict__ hi,
                                const T* __restrict__ h1, const T* __restrict__ h2, T eps,
                                const T* __restrict__ V, otc_int nk, otc_int n, otc_int m,
                                T* __restrict__ out) {
    const otc_int i = (otc_int)blockIdx.x * blockDim.y + threadIdx.y;
    if (i >= n) return;
    const int lane = threadIdx.x;
    const T inv_eps = T(1) / eps;
    const OtcCloudRow<T, KIND> cost{X, YT, d, p, m, i};
    const T fi = h1[i];
    const otc_int r0 = run_ptr[rc[i]], r1 = run_ptr[rc[i] + 1];
    for (otc_int k0 = 0; k0 < nk; k0 += OTC_APPLY_COLS) {
        const int kl = (int)(nk - k0 < OTC_APPLY_COLS ? nk - k0 : OTC_APPLY_COLS);
        double acc[OTC_APPLY_COLS];
#pragma unroll
        for (int u = 0; u < OTC_APPLY_COLS; ++u) acc[u] = 0.0;
        for (otc_int r = r0; r < r1; ++r) {
            for (otc_int j = lo[r] + lane; j < hi[r]; j += 32) {
                const double pij = (double)otc_plan_entry(fi, h2[j], cost(j), inv_eps);
                const T* __restrict__ v = V + j * nk + k0;
#pragma unroll
                for (int u = 0; u < OTC_APPLY_COLS; ++u)
                    if (u < kl) acc[u] += pij * (double)v[u];
            }
        }
#pragma unroll
        for (int u = 0; u < OTC_APPLY_COLS; ++u) {
            const double total = otc_warp_sum(acc[u]);  // every lane takes part
            if (lane == 0 && u < kl) out[i * nk + k0 + u] = T(total);
        }
    }
}

#define OTC_BLOCKSPARSE(T, SUF)                                                              \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_block_softmin_##SUF(         \
        const T* X, const T* YT, int d, int kind, T p, const otc_int* rc,                    \
        const otc_int* run_ptr, const otc_int* lo, const otc_int* hi, const T* h, T eps,     \
        otc_int n, otc_int m, T* out) {                                                      \
        OTC_BY_KIND(otc_block_softmin, (T), X, YT, d, p, rc, run_ptr, lo, hi, h, eps, n, m,  \
                    out)                                                                     \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_block_sums_##SUF(            \
        const T* X, const T* YT, int d, int kind, T p, const otc_int* rc,                    \
        const otc_int* run_ptr, const otc_int* lo, const otc_int* hi, const T* h1,           \
        const T* h2, T eps, otc_int n, otc_int m, double* sums, double* costs) {             \
        OTC_BY_KIND(otc_block_sums, (T), X, YT, d, p, rc, run_ptr, lo, hi, h1, h2, eps, n,   \
                    m, sums, costs)                                                          \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_block_apply_##SUF(           \
        const T* X, const T* YT, int d, int kind, T p, const otc_int* rc,                    \
        const otc_int* run_ptr, const otc_int* lo, const otc_int* hi, const T* h1,           \
        const T* h2, T eps, const T* V, otc_int nk, otc_int n, otc_int m, T* out) {          \
        OTC_BY_KIND(otc_block_apply, (T), X, YT, d, p, rc, run_ptr, lo, hi, h1, h2, eps, V,  \
                    nk, n, m, out)                                                           \
    }

OTC_BLOCKSPARSE(float, f32)
OTC_BLOCKSPARSE(double, f64)
