// Run otcore's CUDA kernels on the CPU, for tests on machines without a GPU.
//
// Every CUDA thread of a block is a fiber on one OS thread (started with makecontext,
// switched with _setjmp/_longjmp, which skip the signal-mask system calls of
// swapcontext); blocks run one after the other. __syncthreads() and the warp shuffles and
// ballots are barriers of the fibers, and the scheduler checks them: a __syncthreads()
// that not every thread of the block reaches (divergence, or threads that already
// returned) and a full-mask warp operation with missing lanes are reported as errors
// instead of silently giving some answer. Shared memory is
// `static` (one block at a time); atomics are plain updates (one OS thread).
//
// What this does not model: the memory model of a real GPU (no races can show), NVRTC's
// math library (host libm instead), and warp-level timing. It is a check of the kernels'
// logic and indexing, not a substitute for running them on a device.
#ifndef OTCORE_CUDA_EMULATOR_H
#define OTCORE_CUDA_EMULATOR_H

#include <math.h>
#include <setjmp.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <string>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

namespace emu {

enum State { RUN, AT_SYNC, AT_WARP, DONE };

struct Fiber {
    ucontext_t start;  // the entry point, used once per block
    jmp_buf env;       // where the fiber waits
    bool started = false;
    State state = RUN;
    dim3 tid;
    int warp = 0, lane = 0;
};

inline std::vector<Fiber> fibers;
inline std::vector<std::vector<char>> stacks;
inline Fiber* current = nullptr;
inline jmp_buf scheduler;
inline const std::function<void()>* body = nullptr;
inline std::vector<unsigned long long> exchange;  // one slot per thread (bits), for warp ops
inline std::string error;
inline dim3 block_idx, block_dim, grid_dim;

inline void yield(State state) {
    current->state = state;
    if (!_setjmp(current->env)) _longjmp(scheduler, 1);
}

inline void trampoline() {
    (*body)();
    current->state = DONE;
    _longjmp(scheduler, 1);  // the fiber never resumes
}

// Release the warps whose 32 lanes all wait at a shuffle; true if any was released.
inline bool release_warps() {
    bool any = false;
    const int warps = (int)fibers.size() / 32;
    for (int w = 0; w < warps; ++w) {
        int waiting = 0, done = 0;
        for (int l = 0; l < 32; ++l) {
            const State s = fibers[w * 32 + l].state;
            waiting += s == AT_WARP;
            done += s == DONE;
        }
        if (waiting == 32) {
            for (int l = 0; l < 32; ++l) fibers[w * 32 + l].state = RUN;
            any = true;
        } else if (waiting > 0 && done > 0) {
            error = "full-mask shuffle with lanes that have returned";
        }
    }
    return any;
}

inline void run_block() {
    for (size_t k = 0; k < fibers.size(); ++k) {
        Fiber& f = fibers[k];
        getcontext(&f.start);
        f.start.uc_stack.ss_sp = stacks[k].data();
        f.start.uc_stack.ss_size = stacks[k].size();
        f.start.uc_link = nullptr;
        makecontext(&f.start, trampoline, 0);
        f.started = false;
        f.state = RUN;
    }
    while (error.empty()) {
        for (size_t k = 0; k < fibers.size(); ++k) {
            if (fibers[k].state != RUN) continue;
            current = &fibers[k];
            if (!_setjmp(scheduler)) {  // resumes here when the fiber yields
                if (current->started) _longjmp(current->env, 1);
                current->started = true;
                setcontext(&current->start);
            }
        }
        int at_sync = 0, done = 0;
        for (const Fiber& f : fibers) {
            at_sync += f.state == AT_SYNC;
            done += f.state == DONE;
        }
        if (done == (int)fibers.size()) return;
        if (release_warps()) continue;
        if (!error.empty()) return;
        if (at_sync + done == (int)fibers.size() && done == 0) {
            for (Fiber& f : fibers) f.state = RUN;
            continue;
        }
        error = at_sync > 0 ? "__syncthreads() not reached by every thread of the block"
                            : "deadlock: shuffle lanes wait at different points";
    }
}

// Launch: run body() for every thread of every block. Returns "" or the error.
inline std::string launch(dim3 grid, dim3 block, const std::function<void()>& fn) {
    const unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > 1024) return "block of " + std::to_string(threads) + " threads";
    if (grid.y > 65535 || grid.z > 65535) return "grid y/z dimension above 65535";
    error.clear();
    body = &fn;
    grid_dim = grid;
    block_dim = block;
    fibers.assign(threads, Fiber());
    stacks.assign(threads, std::vector<char>(1 << 16));
    exchange.assign(threads, 0ull);
    for (unsigned t = 0; t < threads; ++t) {
        fibers[t].tid = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        fibers[t].warp = (int)(t / 32);
        fibers[t].lane = (int)(t % 32);
    }
    for (unsigned z = 0; z < grid.z && error.empty(); ++z)
        for (unsigned y = 0; y < grid.y && error.empty(); ++y)
            for (unsigned x = 0; x < grid.x && error.empty(); ++x) {
                block_idx = dim3{x, y, z};
                run_block();
            }
    return error;
}

}  // namespace emu

#define threadIdx (emu::current->tid)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::yield(emu::AT_SYNC); }

namespace emu {
// A shuffle: every lane writes its value, waits for the whole warp, reads lane `src`'s
// (its own where src is outside the warp, as __shfl_down_sync does).
template <typename T>
inline T shuffle(unsigned mask, T value, int src) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffles move at most 8 bytes");
    if (mask != 0xffffffffu) error = "only full-mask shuffles are emulated";
    const int first = current->warp * 32;
    exchange[first + current->lane] = 0;
    memcpy(&exchange[first + current->lane], &value, sizeof(T));  // bit-exact for any T
    yield(AT_WARP);  // every lane has written
    T other = value;
    if (src >= 0 && src < 32) memcpy(&other, &exchange[first + src], sizeof(T));
    yield(AT_WARP);  // every lane has read
    return other;
}
}  // namespace emu

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int offset) {
    return emu::shuffle(mask, value, emu::current->lane ^ offset);
}

template <typename T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned delta) {
    return emu::shuffle(mask, value, emu::current->lane + (int)delta);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
    if (mask != 0xffffffffu) emu::error = "only full-mask ballots are emulated";
    const int first = emu::current->warp * 32;
    emu::exchange[first + emu::current->lane] = predicate != 0;
    emu::yield(emu::AT_WARP);
    unsigned bits = 0;
    for (int l = 0; l < 32; ++l) bits |= (unsigned)emu::exchange[first + l] << l;
    emu::yield(emu::AT_WARP);
    return bits;
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }

inline long long __double_as_longlong(double x) {
    long long bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

inline double __longlong_as_double(long long bits) {
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

// Atomics: plain updates (one OS thread runs every fiber). atomicAdd for double,
// unsigned and unsigned long long, as in CUDA.
template <typename T>
inline T atomicAdd(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}

inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
    const unsigned long long old = *address;
    *address = value < old ? value : old;
    return old;
}

inline int atomicMax(int* address, int value) {
    const int old = *address;
    *address = value > old ? value : old;
    return old;
}

#endif  // OTCORE_CUDA_EMULATOR_H
