// Softmin over a batch of problems, one launch for the whole batch.
//
// out[k, i] = -eps * log(sum_j exp((h[k, j] - c_k(i, j)) / eps)) for the problems k listed
// in `active` (nact of them) and every row i < n; h is (B, m) and out (B, n), row-major.
// Dense costs: C_k starts at C + k * cstride (cstride 0: one cost shared by the batch);
// one warp per (problem, row): blockDim = (32, OTC_RY), warp w = blockIdx.x * OTC_RY +
// threadIdx.y covers pair w of the nact * n; lanes stride over the m columns. Point
// clouds: sources X_k (n x d) at X + k * xstride, targets Y_k (m x d) at Y + k * ystride;
// one thread per (problem, source point). Reductions over the rows take the transposed
// costs (or the clouds swapped). Every index is checked: no read out of bounds.
#include "common.cuh"

template <typename T>
__device__ void otc_batch_softmin_rows(const T* __restrict__ C, otc_int cstride,
                                       const T* __restrict__ h,
                                       const otc_int* __restrict__ active, otc_int nact,
                                       T eps, otc_int n, otc_int m, T* __restrict__ out) {
    const otc_int w = (otc_int)blockIdx.x * blockDim.y + threadIdx.y;
    if (w >= nact * n) return;  // the whole warp shares w
    const otc_int q = w / n, i = w - q * n;
    const otc_int k = active[q];
    const int lane = threadIdx.x;
    const T c2 = T(OTC_LOG2E) / eps;
    const OtcLse<T> acc = otc_warp_row_lse(C + k * cstride + i * m, h + k * m, 0, m, c2, lane);
    if (lane == 0) out[k * n + i] = otc_lse_value(acc.M, acc.S, eps);
}

template <typename T, int KIND>
__device__ void otc_batch_softmin_cloud(const T* __restrict__ X, otc_int xstride,
                                        const T* __restrict__ Y, otc_int ystride,
                                        const T* __restrict__ h,
                                        const otc_int* __restrict__ active, otc_int nact,
                                        int d, T p, T eps, otc_int n, otc_int m,
                                        T* __restrict__ out) {
    const otc_int t = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nact * n) return;
    const otc_int q = t / n, i = t - q * n;
    const otc_int k = active[q];
    const T* __restrict__ x = X + k * xstride + i * d;
    const T* __restrict__ Yk = Y + k * ystride;
    const T* __restrict__ hk = h + k * m;
    const T c2 = T(OTC_LOG2E) / eps;
    OtcLse<T> acc;
    acc.init();
    int step = 0;
    for (otc_int j = 0; j < m; ++j) {
        T c = T(0);
        for (int kk = 0; kk < d; ++kk) c += otc_term<T, KIND>(x[kk] - Yk[j * d + kk], p);
        acc.push((hk[j] - otc_finish<T, KIND>(c, p)) * c2);
        if (++step == OTC_FOLD) {
            acc.fold();
            step = 0;
        }
    }
    acc.fold();
    out[k * n + i] = otc_lse_value(acc.M, acc.S, eps);
}

#define OTC_BATCH(T, SUF)                                                                  \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_batch_softmin_rows_##SUF(  \
        const T* C, otc_int cstride, const T* h, const otc_int* active, otc_int nact,      \
        T eps, otc_int n, otc_int m, T* out) {                                             \
        otc_batch_softmin_rows<T>(C, cstride, h, active, nact, eps, n, m, out);            \
    }                                                                                      \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_batch_softmin_cloud_##SUF( \
        const T* X, otc_int xstride, const T* Y, otc_int ystride, const T* h,              \
        const otc_int* active, otc_int nact, int d, int kind, T p, T eps, otc_int n,       \
        otc_int m, T* out) {                                                               \
        OTC_BY_KIND(otc_batch_softmin_cloud, (T), X, xstride, Y, ystride, h, active, nact, \
                    d, p, eps, n, m, out)                                                  \
    }

OTC_BATCH(float, f32)
OTC_BATCH(double, f64)
