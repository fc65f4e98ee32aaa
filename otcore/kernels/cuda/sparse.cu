// Sparsification of a dense plan P (n x m, row-major) into CSR: the entries whose
// normalized value q_ij = P_ij / sqrt(r_i c_j) reaches a threshold theta. The caller
// passes isr_i = 1 / sqrt(r_i) and isc_j = 1 / sqrt(c_j) (0 where the marginal is 0 or not
// finite), in double, and every pass computes q_ij = (double)P_ij * isr_i * isc_j with
// the same two roundings (products only: nothing to contract), so that the passes agree
// with each other and with the CPU kernel on which entries are kept.
//
// otc_sparse_hist: histogram of the keys bits(q) >> OTC_KEY_SHIFT (exponent and two
//   mantissa bits), from which the caller picks theta.
// otc_sparse_count / otc_sparse_fill: the kept entries of each (row, column chunk), then
//   their column indices and values at the offsets of the exclusive prefix sum of the
//   counts, in column order.
#include "common.cuh"

#if !defined(OTC_KEY_SHIFT) || !defined(OTC_NKEYS)
#error "compile with the -D options of otcore.kernels.cuda.launch.compile_options()"
#endif

template <typename T>
__device__ __forceinline__ double otc_normalized(T pij, double si, double sj) {
    return (double)pij * si * sj;
}

// Grid-stride loop over the n m entries, the row and column of an entry advanced by the
// stride without a division per entry. Counts per block in shared memory sh (OTC_NKEYS
// 32-bit counters: the launch gives no block more than 2^31 + 256 entries), then one atomicAdd
// per nonzero bin. Key 0 (q < 2^-1024, in particular q = 0) is never kept and not
// counted; keys >= OTC_NKEYS (sign bit set) cannot occur for a plan and are skipped.
template <typename T>
__device__ void otc_sparse_hist(const T* __restrict__ P, const double* __restrict__ isr,
                                const double* __restrict__ isc, otc_int n, otc_int m,
                                unsigned long long* __restrict__ hist, unsigned* sh) {
    for (int k = threadIdx.x; k < OTC_NKEYS; k += blockDim.x) sh[k] = 0u;
    __syncthreads();
    const otc_int total = n * m;
    const otc_int stride = (otc_int)gridDim.x * blockDim.x;
    otc_int q = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;
    if (q < total) {
        otc_int i = q / m, j = q - i * m;
        const otc_int di = stride / m, dj = stride - di * m;
        for (; q < total; q += stride) {
            const double v = otc_normalized(P[q], isr[i], isc[j]);
            const unsigned long long key =
                (unsigned long long)__double_as_longlong(v) >> OTC_KEY_SHIFT;
            if (key > 0ull && key < (unsigned long long)OTC_NKEYS) atomicAdd(sh + key, 1u);
            i += di;
            j += dj;
            if (j >= m) {  // dj < m: one wrap at most
                j -= m;
                ++i;
            }
        }
    }
    __syncthreads();
    for (int k = threadIdx.x; k < OTC_NKEYS; k += blockDim.x) {
        if (sh[k] != 0u) atomicAdd(hist + k, (unsigned long long)sh[k]);
    }
}

// Block (32, OTC_RY): warp ty scans row i = OTC_RY blockIdx.x + ty over the columns of
// chunk blockIdx.y (of gridDim.y), 32 at a time; the ballot of "q >= theta" orders the
// warp's kept entries by column. FILL = false: their number goes to
// counts[i * gridDim.y + blockIdx.y]. FILL = true: they are written from
// offsets[i * gridDim.y + blockIdx.y] on, into indices (columns) and data (values).
template <typename T, bool FILL>
__device__ void otc_sparse_scan(const T* __restrict__ P, const double* __restrict__ isr,
                                const double* __restrict__ isc, double theta, otc_int n,
                                otc_int m, otc_int chunk, otc_int* __restrict__ counts,
                                const otc_int* __restrict__ offsets, int* __restrict__ indices,
                                T* __restrict__ data) {
    const int tx = threadIdx.x;
    const otc_int i = (otc_int)blockIdx.x * OTC_RY + threadIdx.y;
    if (i >= n) return;  // the whole warp (no block-wide barrier below)
    const otc_int slot = i * gridDim.y + blockIdx.y;
    const otc_int j0 = (otc_int)blockIdx.y * chunk;
    const otc_int j1 = j0 + chunk < m ? j0 + chunk : m;
    const T* row = P + i * m;
    const double si = isr[i];
    otc_int pos = FILL ? offsets[slot] : 0;
    for (otc_int jb = j0; jb < j1; jb += 32) {  // uniform across the warp
        const otc_int j = jb + tx;
        const bool keep = j < j1 && otc_normalized(row[j], si, isc[j]) >= theta;
        const unsigned mask = __ballot_sync(OTC_FULL_MASK, keep);
        if (FILL && keep) {
            const otc_int k = pos + __popc(mask & ((1u << tx) - 1u));
            indices[k] = (int)j;
            data[k] = row[j];
        }
        pos += __popc(mask);
    }
    if (!FILL && tx == 0) counts[slot] = pos;
}

#define OTC_SPARSE(T, SUF)                                                                     \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_sparse_hist_##SUF(             \
        const T* P, const double* isr, const double* isc, otc_int n, otc_int m,                \
        unsigned long long* hist) {                                                            \
        __shared__ unsigned sh[OTC_NKEYS];                                                     \
        otc_sparse_hist<T>(P, isr, isc, n, m, hist, sh);                                       \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_sparse_count_##SUF(            \
        const T* P, const double* isr, const double* isc, double theta, otc_int n, otc_int m,  \
        otc_int chunk, otc_int* counts) {                                                      \
        otc_sparse_scan<T, false>(P, isr, isc, theta, n, m, chunk, counts, nullptr, nullptr,   \
                                  nullptr);                                                    \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_sparse_fill_##SUF(             \
        const T* P, const double* isr, const double* isc, double theta, otc_int n, otc_int m,  \
        otc_int chunk, const otc_int* offsets, int* indices, T* data) {                        \
        otc_sparse_scan<T, true>(P, isr, isc, theta, n, m, chunk, nullptr, offsets, indices,   \
                                 data);                                                        \
    }

OTC_SPARSE(float, f32)
OTC_SPARSE(double, f64)
