// Fused one-pass softmin (log-sum-exp) kernels.
//
// out_t = -eps * log(sum_u exp((h_u - C_tu) / eps)), reduced over u in `parts` chunks
// (blockIdx.y). With one part the kernels write `out`; otherwise each part writes its
// folded (M, S) to part_m/part_s[part * len + t] and otc_lse_merge finishes.
// Every index is checked against n, m (and d): no read out of bounds for any size.
#include "common.cuh"

// Rows of a dense row-major C (n x m): one warp per row (blockDim = (32, OTC_RY)),
// lanes stride over the columns of the row chunk, OTC_UNROLL loads in flight per lane.
template <typename T>
__device__ void otc_softmin_dense_rows(const T* __restrict__ C, const T* __restrict__ h,
                                       T eps, otc_int n, otc_int m, otc_int chunk,
                                       T* __restrict__ out, T* __restrict__ part_m,
                                       T* __restrict__ part_s) {
    const otc_int i = (otc_int)blockIdx.x * blockDim.y + threadIdx.y;
    if (i >= n) return;  // the whole warp shares i
    const int lane = threadIdx.x;
    const otc_int j0 = (otc_int)blockIdx.y * chunk;
    const otc_int j1 = j0 + chunk < m ? j0 + chunk : m;
    const T c2 = T(OTC_LOG2E) / eps;
    const OtcLse<T> acc = otc_warp_row_lse(C + i * m, h, j0, j1, c2, lane);
    if (lane == 0)
        otc_lse_store(acc.M, acc.S, eps, i, n, (int)blockIdx.y, (int)gridDim.y, out, part_m,
                      part_s);
}

// Columns of a dense row-major C: thread (tx, ty) owns column j = 32 * blockIdx.x + tx
// (a warp reads 32 consecutive entries of a row: coalesced) and rows ty, ty + OTC_RY, ...
// of the row chunk; the OTC_RY partial accumulators of a column merge in shared memory.
template <typename T>
__device__ void otc_softmin_dense_cols(const T* __restrict__ C, const T* __restrict__ h,
                                       T eps, otc_int n, otc_int m, otc_int chunk,
                                       T* __restrict__ out, T* __restrict__ part_m,
                                       T* __restrict__ part_s) {
    __shared__ T sh_m[OTC_RY][32];
    __shared__ T sh_s[OTC_RY][32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const otc_int j = (otc_int)blockIdx.x * 32 + tx;
    const otc_int i0 = (otc_int)blockIdx.y * chunk;
    const otc_int i1 = i0 + chunk < n ? i0 + chunk : n;
    const T c2 = T(OTC_LOG2E) / eps;
    OtcLse<T> acc;
    acc.init();
    if (j < m) {
        int step = 0;
        for (otc_int ib = i0 + ty; ib < i1; ib += (otc_int)OTC_RY * OTC_UNROLL) {
#pragma unroll
            for (int u = 0; u < OTC_UNROLL; ++u) {
                const otc_int i = ib + (otc_int)u * OTC_RY;
                if (i < i1) acc.push((h[i] - C[i * m + j]) * c2);
            }
            if (++step == OTC_FOLD) {
                acc.fold();
                step = 0;
            }
        }
        acc.fold();
    }
    sh_m[ty][tx] = acc.M;
    sh_s[ty][tx] = acc.S;
    __syncthreads();
    if (ty == 0 && j < m) {
        for (int r = 1; r < OTC_RY; ++r) acc.merge(sh_m[r][tx], sh_s[r][tx]);
        otc_lse_store(acc.M, acc.S, eps, j, m, (int)blockIdx.y, (int)gridDim.y, out, part_m,
                      part_s);
    }
}

// Point clouds, dimension D known at compile time: one thread per source point (its
// coordinates in registers); the block streams the target points of its chunk through
// shared memory in tiles of OTC_TILE points, each stored with its pre-scaled h as D + 1
// consecutive values (one vector load for D = 3), and every thread reduces the whole tile
// (the same shared address for all threads: broadcast).
// S: sources (ns x D), Tg: targets (nt x D), h: length nt; sh: shared memory of
// OTC_TILE * (D + 1) entries.
template <typename T, int D, int KIND>
__device__ void otc_softmin_cloud_fixed(const T* __restrict__ S, const T* __restrict__ Tg,
                                        const T* __restrict__ h, T p, T eps, otc_int ns,
                                        otc_int nt, otc_int chunk, T* __restrict__ out,
                                        T* __restrict__ part_m, T* __restrict__ part_s,
                                        T* sh) {
    const otc_int i = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = i < ns;
    T x[D];
#pragma unroll
    for (int k = 0; k < D; ++k) x[k] = active ? S[i * D + k] : T(0);
    const T c2 = T(OTC_LOG2E) / eps;
    const otc_int j0 = (otc_int)blockIdx.y * chunk;
    const otc_int j1 = j0 + chunk < nt ? j0 + chunk : nt;
    OtcLse<T> acc;
    acc.init();
    for (otc_int t0 = j0; t0 < j1; t0 += OTC_TILE) {
        const int len = (int)(j1 - t0 < OTC_TILE ? j1 - t0 : OTC_TILE);
        __syncthreads();  // the previous tile is consumed
        for (int q = threadIdx.x; q < len * (D + 1); q += blockDim.x) {
            const int jj = q / (D + 1), k = q % (D + 1);
            sh[q] = k < D ? Tg[(t0 + jj) * D + k] : h[t0 + jj] * c2;
        }
        __syncthreads();
#pragma unroll 4
        for (int jj = 0; jj < len; ++jj) {
            const T* yh = sh + jj * (D + 1);
            T c = T(0);
#pragma unroll
            for (int k = 0; k < D; ++k) c += otc_term<T, KIND>(x[k] - yh[k], p);
            c = otc_finish<T, KIND>(c, p);
            acc.push(yh[D] - c * c2);
        }
        acc.fold();
    }
    if (active)
        otc_lse_store(acc.M, acc.S, eps, i, ns, (int)blockIdx.y, (int)gridDim.y, out, part_m,
                      part_s);
}

// Point clouds of any dimension d: one thread per source point, whose coordinates are
// read from the transposed sources ST (d x ns; coalesced across threads). Target tiles of
// OTC_ANY_TILE points are staged through shared memory OTC_ANY_DIMS coordinates at a
// time, and each thread keeps the OTC_ANY_TILE partial costs of a tile in registers, so
// shared memory stays fixed whatever d (d >= 1). Tg: targets (nt x d), h: length nt;
// sh_y, sh_h: shared memory of OTC_ANY_TILE * OTC_ANY_DIMS and OTC_ANY_TILE entries.
template <typename T, int KIND>
__device__ void otc_softmin_cloud_any(const T* __restrict__ ST, const T* __restrict__ Tg,
                                      const T* __restrict__ h, int d, T p, T eps, otc_int ns,
                                      otc_int nt, otc_int chunk, T* __restrict__ out,
                                      T* __restrict__ part_m, T* __restrict__ part_s,
                                      T* sh_y, T* sh_h) {
    const otc_int i = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = i < ns;
    const T c2 = T(OTC_LOG2E) / eps;
    const otc_int j0 = (otc_int)blockIdx.y * chunk;
    const otc_int j1 = j0 + chunk < nt ? j0 + chunk : nt;
    OtcLse<T> acc;
    acc.init();
    for (otc_int t0 = j0; t0 < j1; t0 += OTC_ANY_TILE) {
        const int len = (int)(j1 - t0 < OTC_ANY_TILE ? j1 - t0 : OTC_ANY_TILE);
        T cost[OTC_ANY_TILE];
#pragma unroll
        for (int jj = 0; jj < OTC_ANY_TILE; ++jj) cost[jj] = T(0);
        for (int k0 = 0; k0 < d; k0 += OTC_ANY_DIMS) {
            const int kl = d - k0 < OTC_ANY_DIMS ? d - k0 : OTC_ANY_DIMS;
            __syncthreads();  // the previous chunk (and h tile) is consumed
            for (int q = threadIdx.x; q < OTC_ANY_TILE * OTC_ANY_DIMS; q += blockDim.x) {
                const int jj = q / OTC_ANY_DIMS, kk = q % OTC_ANY_DIMS;
                sh_y[q] = (jj < len && kk < kl) ? Tg[(t0 + jj) * d + k0 + kk] : T(0);
            }
            if (k0 == 0)
                for (int q = threadIdx.x; q < len; q += blockDim.x) sh_h[q] = h[t0 + q] * c2;
            __syncthreads();
            for (int kk = 0; kk < kl; ++kk) {
                const T xk = active ? ST[(otc_int)(k0 + kk) * ns + i] : T(0);
#pragma unroll
                for (int jj = 0; jj < OTC_ANY_TILE; ++jj)
                    cost[jj] += otc_term<T, KIND>(xk - sh_y[jj * OTC_ANY_DIMS + kk], p);
            }
        }
#pragma unroll
        for (int jj = 0; jj < OTC_ANY_TILE; ++jj)
            if (jj < len) acc.push(sh_h[jj] - otc_finish<T, KIND>(cost[jj], p) * c2);
        acc.fold();
    }
    if (active)
        otc_lse_store(acc.M, acc.S, eps, i, ns, (int)blockIdx.y, (int)gridDim.y, out, part_m,
                      part_s);
}

// Finish a reduction split into `parts` chunks: merge the partial (M, S) of each t.
template <typename T>
__device__ void otc_lse_merge(const T* __restrict__ part_m, const T* __restrict__ part_s,
                              otc_int len, int parts, T eps, T* __restrict__ out) {
    const otc_int t = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= len) return;
    T M = otc_lowest<T>();
    for (int k = 0; k < parts; ++k) M = otc_max(M, part_m[(otc_int)k * len + t]);
    T S = T(0);
    for (int k = 0; k < parts; ++k)
        S += part_s[(otc_int)k * len + t] * otc_exp2(part_m[(otc_int)k * len + t] - M);
    out[t] = otc_lse_value(M, S, eps);
}

#define OTC_CLOUD_FIXED(T, SUF, D)                                                          \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_softmin_cloud_d##D##_##SUF( \
        const T* S, const T* Tg, const T* h, int kind, T p, T eps, otc_int ns, otc_int nt,  \
        otc_int chunk, T* out, T* part_m, T* part_s) {                                      \
        alignas(16) __shared__ T sh[OTC_TILE * (D + 1)];                                    \
        OTC_BY_KIND(otc_softmin_cloud_fixed, (T, D), S, Tg, h, p, eps, ns, nt, chunk, out,  \
                    part_m, part_s, sh)                                                     \
    }

#define OTC_SOFTMIN(T, SUF)                                                                  \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_softmin_dense_rows_##SUF(    \
        const T* C, const T* h, T eps, otc_int n, otc_int m, otc_int chunk, T* out,          \
        T* part_m, T* part_s) {                                                              \
        otc_softmin_dense_rows<T>(C, h, eps, n, m, chunk, out, part_m, part_s);              \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_softmin_dense_cols_##SUF(    \
        const T* C, const T* h, T eps, otc_int n, otc_int m, otc_int chunk, T* out,          \
        T* part_m, T* part_s) {                                                              \
        otc_softmin_dense_cols<T>(C, h, eps, n, m, chunk, out, part_m, part_s);              \
    }                                                                                        \
    OTC_CLOUD_FIXED(T, SUF, 1)                                                               \
    OTC_CLOUD_FIXED(T, SUF, 2)                                                               \
    OTC_CLOUD_FIXED(T, SUF, 3)                                                               \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_softmin_cloud_any_##SUF(     \
        const T* ST, const T* Tg, const T* h, int d, int kind, T p, T eps, otc_int ns,       \
        otc_int nt, otc_int chunk, T* out, T* part_m, T* part_s) {                           \
        __shared__ T sh_y[OTC_ANY_TILE * OTC_ANY_DIMS];                                      \
        __shared__ T sh_h[OTC_ANY_TILE];                                                     \
        OTC_BY_KIND(otc_softmin_cloud_any, (T), ST, Tg, h, d, p, eps, ns, nt, chunk, out,    \
                    part_m, part_s, sh_y, sh_h)                                              \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_lse_merge_##SUF(             \
        const T* part_m, const T* part_s, otc_int len, int parts, T eps, T* out) {           \
        otc_lse_merge<T>(part_m, part_s, len, parts, eps, out);                              \
    }

OTC_SOFTMIN(float, f32)
OTC_SOFTMIN(double, f64)
