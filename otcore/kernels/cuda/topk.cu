// Fused top-k kernels of cardinality-constrained OT (GeometryOps.topk of the contract).
//
// otc_topk_groups: one block of OTC_BLOCK = 256 threads per group j (a row of the
// group-major cost K, m x n; grid-stride over the groups). The scores s_i = alpha_i - K_ji
// are formed in double, u_i = s_i + beta_j. Ranking is by s, ties to the smaller index i;
// the plan entries of the group are t_i = (u_i - theta) / gamma on its support.
//
// Scores are ranked through their order-preserving 64-bit keys (the bits of a double,
// sign-folded so that keys compare like the doubles; -0 is folded into +0 first). A
// radix descent over the keys, 8 bits per pass, finds
//   * the kk-th largest score (otc_select): a histogram of the keys in the current range
//     (256 bins, a thread per bin), suffix counts of the bins, and the bin where the count
//     from the top reaches kk; the descent stops as soon as that bin is taken whole, or at
//     a single key whose equal entries are taken by increasing index (a block prefix count
//     in index order);
//   * the support of the simplex projection (otc_simplex_support): the entries with
//     G(u_i) < gamma w_j, G(v) = sum_l [u_l - v]_+, found with the same histograms
//     (counts and sums of u per bin give G at every bin edge).
// The passes start at the highest bit where the smallest and largest keys of the group
// differ, so a descent takes at most 8 passes, and usually 2 or 3.
//
// With c the support size of the unconstrained problem (the number of u_i > 0 for the
// dual, of the full simplex projection for the semi-dual), the k-sparse support is the
// top min(kk, c) entries: the semi-dual first selects the top kk and keeps them when the
// kk-th entry is still positive at their threshold (the rule of the sorted CPU kernel),
// and otherwise computes the support of the full projection, which then lies within them.
// Thresholds come from sums over the support in a fixed order (block reductions, no
// atomics), and a last pass sums the group's value, mass and nonzeros the same way, so
// results do not depend on thread scheduling. The group's support is recorded in `params`
// for otc_topk_rows. With width > 0 the first `width` entries by rank are written to
// (m, width) buffers in index order with their keys -s (padding: +inf, index 0, value 0);
// the caller orders each row with a stable sort on the keys.
//
// otc_topk_rows: the other side's marginal rows_i = sum_j t_ji, over columns of K like the
// column softmin (block (32, OTC_RY), the groups split over blockIdx.y in fixed chunks),
// recomputing each entry and its membership from `params`; otc_topk_merge adds the chunks
// in order. No atomics: the sums are reproducible.
//
// Every index is checked against n, m and width; sizes and offsets are 64-bit.
#include "common.cuh"

#if OTC_BLOCK != 256
#error "topk.cu needs 256 threads per block: one per radix bin"
#endif

#define OTC_BINS 256
#define OTC_WARPS (OTC_BLOCK / 32)

typedef unsigned long long otc_key_t;

// Per-thread partials of the group's first pass (key ranges of s and u, positive u) and
// of its last pass (value, mass, nonzeros), merged over the block by otc_block_merge.
struct OtcRanges {
    otc_key_t smin, smax, umin, umax;
    otc_int positive;
    __device__ __forceinline__ void merge(const OtcRanges& o) {
        smin = o.smin < smin ? o.smin : smin;
        smax = o.smax > smax ? o.smax : smax;
        umin = o.umin < umin ? o.umin : umin;
        umax = o.umax > umax ? o.umax : umax;
        positive += o.positive;
    }
    __device__ __forceinline__ OtcRanges lane_xor(int off) const {
        return {__shfl_xor_sync(OTC_FULL_MASK, smin, off),
                __shfl_xor_sync(OTC_FULL_MASK, smax, off),
                __shfl_xor_sync(OTC_FULL_MASK, umin, off),
                __shfl_xor_sync(OTC_FULL_MASK, umax, off),
                __shfl_xor_sync(OTC_FULL_MASK, positive, off)};
    }
};
struct OtcTotals {
    double value, mass;
    otc_int count;
    __device__ __forceinline__ void merge(const OtcTotals& o) {
        value += o.value;
        mass += o.mass;
        count += o.count;
    }
    __device__ __forceinline__ OtcTotals lane_xor(int off) const {
        return {__shfl_xor_sync(OTC_FULL_MASK, value, off),
                __shfl_xor_sync(OTC_FULL_MASK, mass, off),
                __shfl_xor_sync(OTC_FULL_MASK, count, off)};
    }
};

struct OtcSumU {  // a fixed-order sum of u
    double value;
    __device__ __forceinline__ void merge(const OtcSumU& o) { value += o.value; }
    __device__ __forceinline__ OtcSumU lane_xor(int off) const {
        return {__shfl_xor_sync(OTC_FULL_MASK, value, off)};
    }
};

struct OtcTopkShared {
    otc_key_t cnt[OTC_BINS];     // histogram: entries per bin
    double sum[OTC_BINS];        // histogram: sum of u per bin
    otc_key_t low[OTC_BINS];     // histogram: smallest key per bin
    otc_key_t suf_cnt[OTC_BINS]; // suffix sums of cnt (bins b..255)
    double suf_sum[OTC_BINS];    // suffix sums of sum
    otc_key_t warp_cnt[OTC_WARPS];
    double warp_sum[OTC_WARPS];
    unsigned warp_count[OTC_WARPS];
    OtcRanges red_ranges[OTC_WARPS];
    OtcTotals red_totals[OTC_WARPS];
    OtcSumU red_sums[OTC_WARPS];
    int bin;           // the bin a descent continues in (highest claim, atomicMax)
    otc_int tie_last;  // index of the last selected entry of the boundary key
};

// Order-preserving key of a double (finite inputs) and its inverse.
__device__ __forceinline__ otc_key_t otc_key(double x) {
    const otc_key_t b = (otc_key_t)__double_as_longlong(x + 0.0);  // -0 -> +0
    return (b >> 63) ? ~b : (b | 0x8000000000000000ull);
}
__device__ __forceinline__ double otc_unkey(otc_key_t k) {
    return __longlong_as_double((long long)((k >> 63) ? (k & 0x7fffffffffffffffull) : ~k));
}

// Merge per-thread partials over the block; every thread gets the result (the same
// merge order everywhere).
template <typename P>
__device__ __forceinline__ P otc_block_merge(P p, P* scratch) {
    for (int off = 16; off > 0; off >>= 1) p.merge(p.lane_xor(off));
    __syncthreads();  // earlier readers of scratch are done
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = p;
    __syncthreads();
    P r = scratch[0];
    for (int w = 1; w < OTC_WARPS; ++w) r.merge(scratch[w]);
    return r;
}

// Exclusive prefix count of `flag` over the block in thread order; *total gets the count.
__device__ __forceinline__ otc_int otc_block_rank(bool flag, otc_int* total,
                                                  unsigned* warp_count) {
    const unsigned ballot = __ballot_sync(OTC_FULL_MASK, flag);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_count[warp] = (unsigned)__popc(ballot);
    __syncthreads();
    otc_int before = __popc(ballot & ((1u << lane) - 1u)), all = 0;
    for (int w = 0; w < OTC_WARPS; ++w) {
        if (w < warp) before += warp_count[w];
        all += warp_count[w];
    }
    *total = all;
    return before;
}

// The key range of a radix descent: keys lo .. lo + 2^(shift + 8) - 1, bins of 2^shift.
struct OtcRange {
    otc_key_t lo;
    int shift;
};
__device__ __forceinline__ OtcRange otc_range(otc_key_t kmin, otc_key_t kmax) {
    const otc_key_t diff = kmin ^ kmax;
    const int bits = diff ? 64 - __clzll((long long)diff) : 0;
    const int passes = bits > 8 ? (bits + 7) / 8 : 1;
    const otc_key_t mask = passes == 8 ? ~0ull : (1ull << (8 * passes)) - 1ull;
    return {kmin & ~mask, 8 * passes - 8};
}
__device__ __forceinline__ otc_key_t otc_span(int shift) {  // range length - 1
    return shift >= 56 ? ~0ull : ((otc_key_t)OTC_BINS << shift) - 1ull;
}

// Histogram of the entries whose key lies in the range: keys of u with sums of u per bin
// (SUPPORT), or keys of s with the smallest key per bin. Then the suffix sums of the bins
// (a scan within each warp, then over the warps), and sh.bin reset to -1.
template <typename T, bool SUPPORT>
__device__ void otc_histogram(const T* __restrict__ Kj, const double* __restrict__ alpha,
                              double bj, otc_int n, otc_key_t lo, int shift,
                              OtcTopkShared& sh) {
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const otc_key_t span = otc_span(shift);
    __syncthreads();  // readers of the previous histogram are done
    sh.cnt[t] = 0ull;
    sh.sum[t] = 0.0;
    sh.low[t] = ~0ull;
    if (t == 0) sh.bin = -1;
    __syncthreads();
    for (otc_int i = t; i < n; i += OTC_BLOCK) {
        const double s = alpha[i] - (double)Kj[i];
        const double u = s + bj;
        const otc_key_t key = otc_key(SUPPORT ? u : s);
        if (key >= lo && key - lo <= span) {
            const int b = (int)((key - lo) >> shift);
            atomicAdd(&sh.cnt[b], 1ull);
            if (SUPPORT)
                atomicAdd(&sh.sum[b], u);
            else
                atomicMin(&sh.low[b], key);
        }
    }
    __syncthreads();
    otc_key_t c = sh.cnt[t];
    double v = sh.sum[t];
    for (int off = 1; off < 32; off <<= 1) {  // suffix sums within the warp
        const otc_key_t c2 = __shfl_down_sync(OTC_FULL_MASK, c, off);
        const double v2 = __shfl_down_sync(OTC_FULL_MASK, v, off);
        if (lane + off < 32) {
            c += c2;
            v += v2;
        }
    }
    if (lane == 0) {
        sh.warp_cnt[warp] = c;
        sh.warp_sum[warp] = v;
    }
    __syncthreads();
    for (int w = warp + 1; w < OTC_WARPS; ++w) {
        c += sh.warp_cnt[w];
        v += sh.warp_sum[w];
    }
    sh.suf_cnt[t] = c;
    sh.suf_sum[t] = v;
    __syncthreads();
}

// The highest bin whose thread claims it (-1 if none); every thread gets it.
__device__ __forceinline__ int otc_highest_claim(bool claim, OtcTopkShared& sh) {
    if (claim) atomicMax(&sh.bin, (int)threadIdx.x);
    __syncthreads();
    return sh.bin;
}

// The entries above bin b: suffix count and sum of bins b + 1 .. 255.
__device__ __forceinline__ otc_int otc_above_count(const OtcTopkShared& sh, int b) {
    return b + 1 < OTC_BINS ? (otc_int)sh.suf_cnt[b + 1] : 0;
}
__device__ __forceinline__ double otc_above_sum(const OtcTopkShared& sh, int b) {
    return b + 1 < OTC_BINS ? sh.suf_sum[b + 1] : 0.0;
}

// A top-R selection by score: keys above `key` are in; so is `key` itself when `whole`,
// otherwise its first `need` entries by index. `low` is the smallest selected key.
struct OtcSel {
    otc_key_t key;
    otc_int need;
    bool whole;
    otc_key_t low;
};

template <typename T>
__device__ OtcSel otc_select(const T* __restrict__ Kj, const double* __restrict__ alpha,
                             double bj, otc_int n, otc_int R, otc_key_t kmin, otc_key_t kmax,
                             OtcTopkShared& sh) {
    const OtcRange r = otc_range(kmin, kmax);
    otc_key_t lo = r.lo;
    int shift = r.shift;
    otc_int above = 0;
    for (;;) {
        otc_histogram<T, false>(Kj, alpha, bj, n, lo, shift, sh);
        // the highest bin with at least R entries at or above it
        int b = otc_highest_claim(above + (otc_int)sh.suf_cnt[threadIdx.x] >= R, sh);
        b = b < 0 ? 0 : b;  // only if R > n, which the callers exclude
        above += otc_above_count(sh, b);
        const otc_int need = R - above;
        const otc_key_t bin_lo = lo + ((otc_key_t)b << shift);
        if (need >= (otc_int)sh.cnt[b]) return {bin_lo, need, true, sh.low[b]};
        if (shift == 0) return {bin_lo, need, false, bin_lo};  // ties, taken by index
        lo = bin_lo;
        shift -= 8;
    }
}

// The support of the simplex projection of the whole group, for mass > 0: the `count`
// entries with key(u) >= lo.
struct OtcSupport {
    otc_key_t lo;
    otc_int count;
};

template <typename T>
__device__ OtcSupport otc_simplex_support(const T* __restrict__ Kj,
                                          const double* __restrict__ alpha, double bj,
                                          otc_int n, double mass, otc_key_t kmin,
                                          otc_key_t kmax, OtcTopkShared& sh) {
    const OtcRange r = otc_range(kmin, kmax);
    otc_key_t lo = r.lo;
    int shift = r.shift;
    otc_int above = 0;
    double above_sum = 0.0;
    for (;;) {
        otc_histogram<T, true>(Kj, alpha, bj, n, lo, shift, sh);
        const int t = threadIdx.x;
        // G at the lower edge of bin t, the edge clamped to the data (finite values):
        // G(e) = sum over u >= e of (u - e), decreasing in e; G(e) >= mass iff e <= theta
        otc_key_t edge = lo + ((otc_key_t)t << shift);
        edge = edge < kmin ? kmin : (edge > kmax ? kmax : edge);
        const double e = otc_unkey(edge);
        const double g = (above_sum + sh.suf_sum[t]) - e * (double)(above + (otc_int)sh.suf_cnt[t]);
        const int b = otc_highest_claim(g >= mass, sh);
        if (b < 0)  // every entry of the range is in the support
            return {lo, above + (otc_int)sh.suf_cnt[0]};
        above += otc_above_count(sh, b);
        above_sum += otc_above_sum(sh, b);
        if (sh.cnt[b] == 0ull || shift == 0) {  // bin b holds no support entry
            const otc_key_t top = lo + otc_span(shift);  // last key of the range
            const otc_key_t next = b + 1 < OTC_BINS ? lo + ((otc_key_t)(b + 1) << shift)
                                                    : (top == ~0ull ? top : top + 1ull);
            return {next, above};
        }
        lo += (otc_key_t)b << shift;
        shift -= 8;
    }
}

// Flags of a group's support in `params` (with the selection key, the index of its last
// selected tied entry and the lowest key of u).
#define OTC_TOPK_NONE 1
#define OTC_TOPK_SEL 2
#define OTC_TOPK_U 4
#define OTC_TOPK_PARAMS 4

// Which entries a pass takes (beyond u > theta): all, a top-R selection (by score key),
// the entries with key(u) >= u_lo, or both; `none` takes nothing.
struct OtcSet {
    bool none, use_sel, use_u;
    OtcSel sel;
    otc_key_t u_lo;

    __device__ __forceinline__ bool ranked() const { return use_sel && !sel.whole; }
    // membership apart from the ties of a ranked selection
    __device__ __forceinline__ bool has_untied(otc_key_t ks, otc_key_t ku) const {
        if (none) return false;
        if (use_sel && !(ks > sel.key || (ks == sel.key && sel.whole))) return false;
        return !use_u || ku >= u_lo;
    }
    __device__ __forceinline__ bool has(otc_key_t ks, otc_key_t ku, otc_int rank) const {
        const bool tied = ranked() && ks == sel.key;
        return tied ? (rank < sel.need && (!use_u || ku >= u_lo)) : has_untied(ks, ku);
    }
};

// Sum of u over the set (a selection's ties counted `need` times), in a fixed order.
template <typename T>
__device__ double otc_set_usum(const T* __restrict__ Kj, const double* __restrict__ alpha,
                               double bj, otc_int n, const OtcSet& set, OtcTopkShared& sh) {
    OtcSumU part = {0.0};
    for (otc_int i = threadIdx.x; i < n; i += OTC_BLOCK) {
        const double s = alpha[i] - (double)Kj[i];
        const double u = s + bj;
        if (set.has_untied(otc_key(s), otc_key(u))) part.value += u;
    }
    double total = otc_block_merge(part, sh.red_sums).value;
    if (set.ranked()) total += (double)set.sel.need * (otc_unkey(set.sel.key) + bj);
    return total;
}

// One pass over the group in tiles of OTC_BLOCK entries (index order), with the rank of
// each entry among the entries of key set.sel.key when the set needs it; calls
// visit(i, s, u, rank, in) for every thread and tile (i >= n: in = false, padding).
template <typename T, typename Visit>
__device__ __forceinline__ void otc_scan_set(const T* __restrict__ Kj,
                                             const double* __restrict__ alpha, double bj,
                                             otc_int n, const OtcSet& set, double theta,
                                             OtcTopkShared& sh, Visit& visit) {
    const bool ranked = set.ranked();
    otc_int base = 0;  // entries of key set.sel.key in the earlier tiles
    for (otc_int i0 = 0; i0 < n; i0 += OTC_BLOCK) {
        const otc_int i = i0 + threadIdx.x;
        double s = 0.0, u = 0.0;
        otc_key_t ks = 0ull;
        if (i < n) {
            s = alpha[i] - (double)Kj[i];
            u = s + bj;
            ks = otc_key(s);
        }
        otc_int rank = -1;
        if (ranked) {
            otc_int tied;
            const bool eq = i < n && ks == set.sel.key;
            const otc_int before = otc_block_rank(eq, &tied, sh.warp_count);
            rank = eq ? base + before : -1;
            base += tied;
        }
        const bool in = i < n && u > theta && set.has(ks, otc_key(u), rank);
        visit(i, s, u, rank, in);
    }
}

struct OtcAccumulate {  // the group's value, mass and nonzeros; the last selected tie
    double inv_gamma, gamma, theta;
    otc_int need;
    OtcTotals part;
    otc_int* tie_last;
    __device__ __forceinline__ void operator()(otc_int i, double, double u, otc_int rank,
                                               bool in) {
        if (rank >= 0 && rank == need - 1) *tie_last = i;
        if (!in) return;
        const double t = (u - theta) * inv_gamma;
        part.value += t * (u - 0.5 * gamma * t);
        part.mass += t;
        ++part.count;
    }
};

struct OtcWrite {  // the listed entries, in index order, at slots of one row
    double inv_gamma, theta;
    otc_int width, slot;
    double* __restrict__ keys;
    otc_int* __restrict__ idx;
    double* __restrict__ val;
    unsigned* warp_count;
    __device__ __forceinline__ void operator()(otc_int i, double s, double u, otc_int,
                                               bool in) {
        otc_int listed;
        const otc_int at = slot + otc_block_rank(in, &listed, warp_count);
        slot += listed;
        if (in && at < width) {
            keys[at] = -s;
            idx[at] = i;
            val[at] = (u - theta) * inv_gamma;
        }
    }
};

template <typename T>
__device__ void otc_topk_group(const T* __restrict__ K, const double* __restrict__ alpha,
                               const double* __restrict__ beta, const double* __restrict__ w,
                               double gamma, otc_int n, otc_int kk, int simplex,
                               otc_int width, otc_int j, double* __restrict__ gval,
                               double* __restrict__ gsum, double* __restrict__ theta_out,
                               otc_int* __restrict__ nnz, otc_int* __restrict__ params,
                               double* __restrict__ keys, otc_int* __restrict__ idx,
                               double* __restrict__ val, OtcTopkShared& sh) {
    const int tid = threadIdx.x;
    const T* __restrict__ Kj = K + j * n;
    const double bj = beta[j];
    const double mass = simplex ? gamma * w[j] : 0.0;

    // key ranges of s and u, and the number of positive u (the dual's support)
    OtcRanges part = {~0ull, 0ull, ~0ull, 0ull, 0};
    for (otc_int i = tid; i < n; i += OTC_BLOCK) {
        const double s = alpha[i] - (double)Kj[i];
        const double u = s + bj;
        const otc_key_t ks = otc_key(s), ku = otc_key(u);
        part.merge({ks, ks, ku, ku, u > 0.0 ? 1 : 0});
    }
    const OtcRanges r = otc_block_merge(part, sh.red_ranges);

    OtcSet set = {false, false, false, {0ull, 0, true, 0ull}, 0ull};
    double theta = 0.0;
    if (simplex && !(mass > 0.0)) {  // no mass: t = 0, theta = u_1
        set.none = true;
        theta = otc_unkey(r.umax);
    } else if (simplex) {
        bool full = true;
        if (kk < n) {
            set.use_sel = true;
            set.sel = otc_select<T>(Kj, alpha, bj, n, kk, r.smin, r.smax, sh);
            theta = (otc_set_usum<T>(Kj, alpha, bj, n, set, sh) - mass) / (double)kk;
            // the CPU's rule at r = kk: u_kk - (sum of the top kk - mass) / kk > 0 keeps all
            full = !((otc_unkey(set.sel.low) + bj) - theta > 0.0);
        }
        if (full) {  // the support of the full projection, if it has at most kk entries
            const OtcSupport sup =
                otc_simplex_support<T>(Kj, alpha, bj, n, mass, r.umin, r.umax, sh);
            if (sup.count > 0 && sup.count <= kk) {
                OtcSet support = {false, false, true, set.sel, sup.lo};
                theta = (otc_set_usum<T>(Kj, alpha, bj, n, support, sh) - mass) /
                        (double)sup.count;
                set = support;
            } else if (!set.use_sel) {  // a mass below the rounding of the scores
                set.none = true;
                theta = otc_unkey(r.umax);
            }  // else a support inconsistent with the selection by rounding: keep the latter
        }
    } else if (r.positive > kk) {
        set.use_sel = true;
        set.sel = otc_select<T>(Kj, alpha, bj, n, kk, r.smin, r.smax, sh);
    }

    // the group's sums, in a fixed order
    const double inv_gamma = 1.0 / gamma;
    if (tid == 0) sh.tie_last = n;  // ordered before its use by the syncs of the ranks
    OtcAccumulate acc = {inv_gamma, gamma, theta, set.ranked() ? set.sel.need : 0,
                         {0.0, 0.0, 0}, &sh.tie_last};
    otc_scan_set<T>(Kj, alpha, bj, n, set, theta, sh, acc);
    const OtcTotals sums = otc_block_merge(acc.part, sh.red_totals);
    if (tid == 0) {
        gval[j] = sums.value;
        gsum[j] = sums.mass;
        theta_out[j] = theta;
        nnz[j] = sums.count;
        otc_int* pj = params + j * OTC_TOPK_PARAMS;
        pj[0] = (set.none ? OTC_TOPK_NONE : 0) | (set.use_sel ? OTC_TOPK_SEL : 0) |
                (set.use_u ? OTC_TOPK_U : 0);
        pj[1] = (otc_int)set.sel.key;
        pj[2] = set.ranked() ? sh.tie_last : n;
        pj[3] = (otc_int)set.u_lo;
    }
    if (width <= 0) return;

    // the first `width` entries by rank: all of them, or the top `width` (a rank prefix
    // of the support, so still within it)
    OtcSet listed = set;
    if (sums.count > width) {
        listed.use_sel = true;
        listed.use_u = false;
        listed.sel = otc_select<T>(Kj, alpha, bj, n, width, r.smin, r.smax, sh);
    }
    const otc_int row = j * width;
    OtcWrite out = {inv_gamma, theta, width, 0, keys + row, idx + row, val + row,
                    sh.warp_count};
    otc_scan_set<T>(Kj, alpha, bj, n, listed, theta, sh, out);
    const otc_int written = out.slot < width ? out.slot : width;
    const double inf = __longlong_as_double(0x7ff0000000000000ll);
    for (otc_int at = written + tid; at < width; at += OTC_BLOCK) {
        keys[row + at] = inf;
        idx[row + at] = 0;
        val[row + at] = 0.0;
    }
}

// rows_i = sum_j t_ji over the groups j of chunk blockIdx.y: thread (tx, ty) owns entry
// i = 32 blockIdx.x + tx (a warp reads 32 consecutive entries of a group: coalesced) and
// groups ty, ty + OTC_RY, ...; the OTC_RY partial sums of an entry are added in shared
// memory in a fixed order and written to part_rows[blockIdx.y * n + i].
template <typename T>
__device__ void otc_topk_rows(const T* __restrict__ K, const double* __restrict__ alpha,
                              const double* __restrict__ beta, double gamma,
                              const double* __restrict__ theta,
                              const otc_int* __restrict__ params, otc_int m, otc_int n,
                              otc_int chunk, double* __restrict__ part_rows,
                              double (*sh)[32]) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    const otc_int i = (otc_int)blockIdx.x * 32 + tx;
    const otc_int j0 = (otc_int)blockIdx.y * chunk;
    const otc_int j1 = j0 + chunk < m ? j0 + chunk : m;
    const double inv_gamma = 1.0 / gamma;
    double acc = 0.0;
    if (i < n) {
        const double ai = alpha[i];
        for (otc_int j = j0 + ty; j < j1; j += OTC_RY) {
            const otc_int* __restrict__ pj = params + j * OTC_TOPK_PARAMS;
            const otc_int flags = pj[0];
            const double s = ai - (double)K[j * n + i];
            const double u = s + beta[j];
            const double th = theta[j];
            bool in = !(flags & OTC_TOPK_NONE) && u > th;
            if (in && (flags & OTC_TOPK_SEL)) {
                const otc_key_t ks = otc_key(s), key = (otc_key_t)pj[1];
                in = ks > key || (ks == key && i <= pj[2]);
            }
            if (in && (flags & OTC_TOPK_U)) in = otc_key(u) >= (otc_key_t)pj[3];
            if (in) acc += (u - th) * inv_gamma;
        }
    }
    sh[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && i < n) {
        double total = sh[0][tx];
        for (int q = 1; q < OTC_RY; ++q) total += sh[q][tx];
        part_rows[(otc_int)blockIdx.y * n + i] = total;
    }
}

#define OTC_TOPK(T, SUF)                                                                     \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_topk_groups_##SUF(           \
        const T* K, const double* alpha, const double* beta, const double* w, double gamma,  \
        otc_int m, otc_int n, otc_int k, int simplex, otc_int width, double* gval,           \
        double* gsum, double* theta, otc_int* nnz, otc_int* params, double* keys,            \
        otc_int* idx, double* val) {                                                         \
        __shared__ OtcTopkShared sh;                                                         \
        const otc_int kk = k < n ? k : n;                                                    \
        for (otc_int j = blockIdx.x; j < m; j += gridDim.x)                                  \
            otc_topk_group<T>(K, alpha, beta, w, gamma, n, kk, simplex, width, j, gval, gsum, \
                              theta, nnz, params, keys, idx, val, sh);                       \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_topk_rows_##SUF(             \
        const T* K, const double* alpha, const double* beta, double gamma,                   \
        const double* theta, const otc_int* params, otc_int m, otc_int n, otc_int chunk,     \
        double* part_rows) {                                                                 \
        __shared__ double sh[OTC_RY][32];                                                    \
        otc_topk_rows<T>(K, alpha, beta, gamma, theta, params, m, n, chunk, part_rows, sh);  \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(OTC_BLOCK) otc_topk_merge_##SUF(            \
        const double* part_rows, int parts, otc_int n, double* rows) {                       \
        const otc_int i = (otc_int)blockIdx.x * blockDim.x + threadIdx.x;                    \
        if (i >= n) return;                                                                  \
        double total = part_rows[i];  /* the parts in order */                               \
        for (int q = 1; q < parts; ++q) total += part_rows[(otc_int)q * n + i];              \
        rows[i] = total;                                                                     \
    }

OTC_TOPK(float, f32)
OTC_TOPK(double, f64)
