/* Blocks of contiguous adds for col2im and the depthwise kernel's tap sums, compiled for several
 * instruction sets and picked at load time (function multiversioning, GCC >= 6 or Clang >= 14 on
 * x86-64 glibc), so a portable build still uses AVX2 / AVX-512 where the machine has them.
 * Elsewhere one build for the baseline.  Compilers without GNU C extensions (MSVC) get plain ISO C
 * loops that compute the same values; -DCONVBP_PLAIN_C selects them anywhere (CI tests them). */
#ifndef CONVBP_SIMD_H
#define CONVBP_SIMD_H

#include <limits.h> /* defines __GLIBC__ on glibc, whose ifuncs the clones need */
#include <stddef.h>

#if (defined(__GNUC__) || defined(__clang__)) && !defined(CONVBP_PLAIN_C)
#define CONVBP_VECTORS 1 /* GNU C vector extensions */
#else
#define CONVBP_VECTORS 0
#endif

#if defined(__has_attribute)
#define CONVBP_HAS_ATTRIBUTE(x) __has_attribute(x)
#else
#define CONVBP_HAS_ATTRIBUTE(x) 0
#endif

/* Clang has target_clones from version 14 on (__has_attribute says so), GCC from 6. */
#if CONVBP_VECTORS && defined(__x86_64__) && defined(__GLIBC__) && CONVBP_HAS_ATTRIBUTE(target_clones)
#define CONVBP_MULTIVERSIONED 1
#define CONVBP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CONVBP_MULTIVERSIONED 0
#define CONVBP_CLONES
#endif

/* Each module uses some of these static functions.  Clang refuses `unused` on multiversioned
 * functions, so there the warning is silenced for this header instead. */
#if defined(__clang__) && CONVBP_MULTIVERSIONED
#define CONVBP_UNUSED
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunused-function"
#elif defined(__GNUC__) || defined(__clang__)
#define CONVBP_UNUSED __attribute__((unused))
#else
#define CONVBP_UNUSED
#endif

/* The clone the load-time dispatcher picks on this machine -- the same test, in the same order of
 * priority, as the resolver -- or "baseline" where there is a single build. */
CONVBP_UNUSED static const char *convbp_simd_variant(void)
{
#if CONVBP_MULTIVERSIONED
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "avx512f";
    if (__builtin_cpu_supports("avx2"))
        return "avx2";
    return "default";
#else
    return "baseline";
#endif
}

/* dst[a*dst_a + b*dst_b + j] += src[a*src_a + b*src_b + j] for a < na, b < nb, j < n:
 * a block of contiguous runs in one call, so short runs (a few channels, a few output columns)
 * do not each pay for a call.  dst and src never overlap. */
#define CONVBP_ADD_BLOCK_DEF(NAME, T)                                                           \
    CONVBP_CLONES CONVBP_UNUSED                                                                 \
    static void NAME(T *dst, ptrdiff_t dst_a, ptrdiff_t dst_b,                                  \
                     const T *src, ptrdiff_t src_a, ptrdiff_t src_b,                            \
                     ptrdiff_t na, ptrdiff_t nb, ptrdiff_t n)                                   \
    {                                                                                           \
        for (ptrdiff_t a = 0; a < na; ++a)                                                      \
            for (ptrdiff_t b = 0; b < nb; ++b) {                                                \
                T *restrict d = dst + a * dst_a + b * dst_b;                                    \
                const T *restrict s = src + a * src_a + b * src_b;                              \
                for (ptrdiff_t j = 0; j < n; ++j)                                               \
                    d[j] += s[j];                                                               \
            }                                                                                   \
    }

CONVBP_ADD_BLOCK_DEF(convbp_add_block_f32, float)
CONVBP_ADD_BLOCK_DEF(convbp_add_block_f64, double)

/* im2col's runs: dst[a*dst_a + b*dst_b + j] = src[a*src_a + b*src_b + j*src_step] for a < na,
 * b < nb, j < n (src NULL: = 0), a block of runs per call -- a few channels of many pixels, a
 * few output columns of many rows -- so short runs do not each pay for a memcpy call.  A
 * unit-step run goes in whole vectors (GCC vector types, inlined into each clone: its widest
 * registers), the last ending at the run's end and overlapping the one before: a compiler's
 * vectorised loop would leave a run of 7 or 21 floats mostly to its scalar remainder.  Steps 2
 * to 8 (a stride-2 layer's NCHW row; an NHWC gather across few channels) are constants the
 * compiler vectorises.  No overlap of dst and src. */
#if CONVBP_VECTORS
/* Unaligned vectors of 64, 32 and 16 bytes. */
typedef float convbp_f32x16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef float convbp_f32x8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef float convbp_f32x4 __attribute__((vector_size(16), aligned(4), may_alias));
typedef double convbp_f64x8 __attribute__((vector_size(64), aligned(8), may_alias));
typedef double convbp_f64x4 __attribute__((vector_size(32), aligned(8), may_alias));
typedef double convbp_f64x2 __attribute__((vector_size(16), aligned(8), may_alias));

#define CONVBP_INLINE static inline __attribute__((always_inline))
/* The pieces of a run of n: whole vectors of V, or two overlapping halves (VH) or quarters (VQ). */
#define CONVBP_RUN_DEF(NAME, T, V, VH, VQ)                                                      \
    CONVBP_INLINE void NAME(T *restrict d, const T *restrict s, ptrdiff_t n)                    \
    {                                                                                           \
        const ptrdiff_t L = (ptrdiff_t)(sizeof(V) / sizeof(T));                                 \
        if (n >= L) {                                                                           \
            ptrdiff_t j = 0;                                                                    \
            for (; j + L <= n; j += L)                                                          \
                *(V *)(d + j) = s ? *(const V *)(s + j) : (V){0};                               \
            if (j < n)                                                                          \
                *(V *)(d + n - L) = s ? *(const V *)(s + n - L) : (V){0};                       \
        } else if (n >= L / 2) {                                                                \
            *(VH *)d = s ? *(const VH *)s : (VH){0};                                            \
            *(VH *)(d + n - L / 2) = s ? *(const VH *)(s + n - L / 2) : (VH){0};                \
        } else if (n >= L / 4) {                                                                \
            *(VQ *)d = s ? *(const VQ *)s : (VQ){0};                                            \
            *(VQ *)(d + n - L / 4) = s ? *(const VQ *)(s + n - L / 4) : (VQ){0};                \
        } else {                                                                                \
            for (ptrdiff_t j = 0; j < n; ++j)                                                   \
                d[j] = s ? s[j] : 0;                                                            \
        }                                                                                       \
    }
CONVBP_RUN_DEF(convbp_run_f32, float, convbp_f32x16, convbp_f32x8, convbp_f32x4)
CONVBP_RUN_DEF(convbp_run_f64, double, convbp_f64x8, convbp_f64x4, convbp_f64x2)
#define CONVBP_RUN(RUN, d, s, n) RUN(d, s, n)
#else
#define CONVBP_RUN(RUN, d, s, n)                                                                \
    for (ptrdiff_t j = 0; j < n; ++j)                                                           \
        d[j] = s ? s[j] : 0
#endif

/* GCC would turn the runs back into memcpy/memset calls, the cost this routine avoids (Clang
 * refuses such attributes on multiversioned functions). */
#if defined(__GNUC__) && !defined(__clang__)
#define CONVBP_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define CONVBP_NO_LIBCALLS
#endif

/* A constant step, which the compiler vectorises with permutes (a variable one it gathers
 * element by element, or with slow gather instructions). */
#define CONVBP_STEP_CASE(K)                                                                     \
    case K:                                                                                     \
        for (ptrdiff_t j = 0; j < n; ++j)                                                       \
            d[j] = s[(K) * j];                                                                  \
        break;

#define CONVBP_COPY_BLOCK_DEF(NAME, T, RUN)                                                     \
    CONVBP_CLONES CONVBP_UNUSED CONVBP_NO_LIBCALLS                                              \
    static void NAME(T *dst, ptrdiff_t dst_a, ptrdiff_t dst_b,                                  \
                     const T *src, ptrdiff_t src_a, ptrdiff_t src_b, ptrdiff_t src_step,        \
                     ptrdiff_t na, ptrdiff_t nb, ptrdiff_t n)                                   \
    {                                                                                           \
        for (ptrdiff_t a = 0; a < na; ++a)                                                      \
            for (ptrdiff_t b = 0; b < nb; ++b) {                                                \
                T *restrict d = dst + a * dst_a + b * dst_b;                                    \
                const T *restrict s = src ? src + a * src_a + b * src_b : NULL;                 \
                switch (s == NULL ? 1 : src_step) {                                             \
                case 1: CONVBP_RUN(RUN, d, s, n); break;                                        \
                CONVBP_STEP_CASE(2) CONVBP_STEP_CASE(3) CONVBP_STEP_CASE(4)                     \
                CONVBP_STEP_CASE(5) CONVBP_STEP_CASE(6) CONVBP_STEP_CASE(7)                     \
                CONVBP_STEP_CASE(8)                                                             \
                default:                                                                        \
                    for (ptrdiff_t j = 0; j < n; ++j)                                           \
                        d[j] = s[j * src_step];                                                 \
                }                                                                               \
            }                                                                                   \
    }

CONVBP_COPY_BLOCK_DEF(convbp_copy_block_f32, float, convbp_run_f32)
CONVBP_COPY_BLOCK_DEF(convbp_copy_block_f64, double, convbp_run_f64)

/* Depthwise input-gradient sums (convbp/_depthwise.pyx), several lanes of outputs at
 * once in GCC vector types, which each clone lowers to its widest registers (the baseline to
 * SSE2 pieces).  Every output element is summed over its taps in list order, t = 0, 1, ...:
 * ((p0 + p1) + p2) + ..., the same operations whether it falls in a full block, a narrower one
 * or the scalar remainder, so where a block boundary falls never changes a value.  A remainder
 * is covered by one more block ending at the last element, overlapping the previous one (it
 * rewrites those elements with the same values), or by narrower blocks when the length is
 * shorter than a block.  No clone fuses a*b + c into a multiply-add: meson.build passes
 * -ffp-contract=off (GCC in ISO C mode does not contract anyway; Clang would).  GNU C vector
 * extensions: GCC or Clang; the plain-C lanes below compute the same values elsewhere. */
#if CONVBP_VECTORS

/* One block of L = sizeof(V)/sizeof(T) outputs at i of convbp_dw_width: o_[(i + l)*step]. */
#define CONVBP_DW_WIDTH_BLOCK(V, T, i)                                                          \
    do {                                                                                        \
        const ptrdiff_t i_ = (i);                                                               \
        V acc_ = *(const V *)(s_ + off[0] + i_) * wv[0];                                        \
        for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_)                                               \
            acc_ = acc_ + *(const V *)(s_ + off[t_] + i_) * wv[t_];                             \
        if (step == 1) {                                                                        \
            *(V *)(o_ + i_) = acc_;                                                             \
        } else {                                                                                \
            for (int l_ = 0; l_ < (int)(sizeof(V) / sizeof(T)); ++l_)                           \
                o_[(i_ + l_) * step] = acc_[l_];                                                \
        }                                                                                       \
    } while (0)

/* The block at i for two rows at once (o_, s_ and o2_, s2_): two independent sums in flight. */
#define CONVBP_DW_WIDTH_BLOCK2R(V, T, i)                                                        \
    do {                                                                                        \
        const ptrdiff_t i_ = (i);                                                               \
        V acc_ = *(const V *)(s_ + off[0] + i_) * wv[0];                                        \
        V acc2_ = *(const V *)(s2_ + off[0] + i_) * wv[0];                                      \
        for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_) {                                             \
            acc_ = acc_ + *(const V *)(s_ + off[t_] + i_) * wv[t_];                             \
            acc2_ = acc2_ + *(const V *)(s2_ + off[t_] + i_) * wv[t_];                          \
        }                                                                                       \
        if (step == 1) {                                                                        \
            *(V *)(o_ + i_) = acc_;                                                             \
            *(V *)(o2_ + i_) = acc2_;                                                           \
        } else {                                                                                \
            for (int l_ = 0; l_ < (int)(sizeof(V) / sizeof(T)); ++l_) {                         \
                o_[(i_ + l_) * step] = acc_[l_];                                                \
                o2_[(i_ + l_) * step] = acc2_[l_];                                              \
            }                                                                                   \
        }                                                                                       \
    } while (0)

/* One block of channels at j of convbp_dw_channels, for pixel pointers o_ (out), s_ (src). */
#define CONVBP_DW_CHAN_BLOCK(V, T, j)                                                           \
    do {                                                                                        \
        const ptrdiff_t j_ = (j);                                                               \
        V acc_ = *(const V *)(s_ + s_off[0] + j_) * *(const V *)(filt + w_off[0] + j_);         \
        for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_)                                               \
            acc_ = acc_ + *(const V *)(s_ + s_off[t_] + j_) * *(const V *)(filt + w_off[t_] + j_); \
        *(V *)(o_ + j_) = acc_;                                                                 \
    } while (0)

/* Two and four blocks of channels at j, j + L, ...: independent sums that overlap in the
 * pipeline (one block's sum is a chain of dependent adds). */
#define CONVBP_DW_CHAN_BLOCK2(V, T, j, L)                                                       \
    do {                                                                                        \
        const T *const a_ = s_ + s_off[0] + (j), *const f_ = filt + w_off[0] + (j);             \
        V acc0_ = *(const V *)a_ * *(const V *)f_;                                              \
        V acc1_ = *(const V *)(a_ + (L)) * *(const V *)(f_ + (L));                              \
        for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_) {                                             \
            const T *const b_ = s_ + s_off[t_] + (j), *const g_ = filt + w_off[t_] + (j);       \
            acc0_ = acc0_ + *(const V *)b_ * *(const V *)g_;                                    \
            acc1_ = acc1_ + *(const V *)(b_ + (L)) * *(const V *)(g_ + (L));                    \
        }                                                                                       \
        *(V *)(o_ + (j)) = acc0_;                                                               \
        *(V *)(o_ + (j) + (L)) = acc1_;                                                         \
    } while (0)

#define CONVBP_DW_CHAN_BLOCK4(V, T, j, L)                                                       \
    do {                                                                                        \
        const T *const a_ = s_ + s_off[0] + (j), *const f_ = filt + w_off[0] + (j);             \
        V acc0_ = *(const V *)a_ * *(const V *)f_;                                              \
        V acc1_ = *(const V *)(a_ + (L)) * *(const V *)(f_ + (L));                              \
        V acc2_ = *(const V *)(a_ + 2 * (L)) * *(const V *)(f_ + 2 * (L));                      \
        V acc3_ = *(const V *)(a_ + 3 * (L)) * *(const V *)(f_ + 3 * (L));                      \
        for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_) {                                             \
            const T *const b_ = s_ + s_off[t_] + (j), *const g_ = filt + w_off[t_] + (j);       \
            acc0_ = acc0_ + *(const V *)b_ * *(const V *)g_;                                    \
            acc1_ = acc1_ + *(const V *)(b_ + (L)) * *(const V *)(g_ + (L));                    \
            acc2_ = acc2_ + *(const V *)(b_ + 2 * (L)) * *(const V *)(g_ + 2 * (L));            \
            acc3_ = acc3_ + *(const V *)(b_ + 3 * (L)) * *(const V *)(g_ + 3 * (L));            \
        }                                                                                       \
        *(V *)(o_ + (j)) = acc0_;                                                               \
        *(V *)(o_ + (j) + (L)) = acc1_;                                                         \
        *(V *)(o_ + (j) + 2 * (L)) = acc2_;                                                     \
        *(V *)(o_ + (j) + 3 * (L)) = acc3_;                                                     \
    } while (0)

/* Two blocks of channels at j, j + L for two pixels (o_, s_ and o2_, s2_) at once: each filter
 * load serves both pixels. */
#define CONVBP_DW_CHAN_BLOCK2X2(V, T, j, L)                                                     \
    do {                                                                                        \
        const T *const f_ = filt + w_off[0] + (j);                                              \
        const V f0_ = *(const V *)f_, f1_ = *(const V *)(f_ + (L));                             \
        V acc0_ = *(const V *)(s_ + s_off[0] + (j)) * f0_;                                      \
        V acc1_ = *(const V *)(s_ + s_off[0] + (j) + (L)) * f1_;                                \
        V acc2_ = *(const V *)(s2_ + s_off[0] + (j)) * f0_;                                     \
        V acc3_ = *(const V *)(s2_ + s_off[0] + (j) + (L)) * f1_;                               \
        for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_) {                                             \
            const T *const g_ = filt + w_off[t_] + (j);                                         \
            const V g0_ = *(const V *)g_, g1_ = *(const V *)(g_ + (L));                         \
            acc0_ = acc0_ + *(const V *)(s_ + s_off[t_] + (j)) * g0_;                           \
            acc1_ = acc1_ + *(const V *)(s_ + s_off[t_] + (j) + (L)) * g1_;                     \
            acc2_ = acc2_ + *(const V *)(s2_ + s_off[t_] + (j)) * g0_;                          \
            acc3_ = acc3_ + *(const V *)(s2_ + s_off[t_] + (j) + (L)) * g1_;                    \
        }                                                                                       \
        *(V *)(o_ + (j)) = acc0_;                                                               \
        *(V *)(o_ + (j) + (L)) = acc1_;                                                         \
        *(V *)(o2_ + (j)) = acc2_;                                                              \
        *(V *)(o2_ + (j) + (L)) = acc3_;                                                        \
    } while (0)

#else
/* Plain C: a "vector" is only its size, each lane is summed on its own in the same tap order, so
 * every value is the one the vector code computes. */
typedef struct { float v[16]; } convbp_f32x16;
typedef struct { float v[8]; } convbp_f32x8;
typedef struct { float v[4]; } convbp_f32x4;
typedef struct { double v[8]; } convbp_f64x8;
typedef struct { double v[4]; } convbp_f64x4;
typedef struct { double v[2]; } convbp_f64x2;

#define CONVBP_DW_WIDTH_BLOCK(V, T, i)                                                          \
    do {                                                                                        \
        const ptrdiff_t i_ = (i);                                                               \
        for (ptrdiff_t l_ = 0; l_ < (ptrdiff_t)(sizeof(V) / sizeof(T)); ++l_) {                 \
            T acc_ = s_[off[0] + i_ + l_] * wv[0];                                              \
            for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_)                                           \
                acc_ = acc_ + s_[off[t_] + i_ + l_] * wv[t_];                                   \
            o_[(i_ + l_) * step] = acc_;                                                        \
        }                                                                                       \
    } while (0)

#define CONVBP_DW_WIDTH_BLOCK2R(V, T, i)                                                        \
    do {                                                                                        \
        CONVBP_DW_WIDTH_BLOCK(V, T, i);                                                         \
        {                                                                                       \
            T *const o_ = o2_;                                                                  \
            const T *const s_ = s2_;                                                            \
            CONVBP_DW_WIDTH_BLOCK(V, T, i);                                                     \
        }                                                                                       \
    } while (0)

#define CONVBP_DW_CHAN_BLOCK(V, T, j)                                                           \
    do {                                                                                        \
        const ptrdiff_t j_ = (j);                                                               \
        for (ptrdiff_t l_ = 0; l_ < (ptrdiff_t)(sizeof(V) / sizeof(T)); ++l_) {                 \
            T acc_ = s_[s_off[0] + j_ + l_] * filt[w_off[0] + j_ + l_];                         \
            for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_)                                           \
                acc_ = acc_ + s_[s_off[t_] + j_ + l_] * filt[w_off[t_] + j_ + l_];              \
            o_[j_ + l_] = acc_;                                                                 \
        }                                                                                       \
    } while (0)

#define CONVBP_DW_CHAN_BLOCK2(V, T, j, L)                                                       \
    do {                                                                                        \
        CONVBP_DW_CHAN_BLOCK(V, T, j);                                                          \
        CONVBP_DW_CHAN_BLOCK(V, T, (j) + (L));                                                  \
    } while (0)

#define CONVBP_DW_CHAN_BLOCK4(V, T, j, L)                                                       \
    do {                                                                                        \
        CONVBP_DW_CHAN_BLOCK2(V, T, j, L);                                                      \
        CONVBP_DW_CHAN_BLOCK2(V, T, (j) + 2 * (L), L);                                          \
    } while (0)

#define CONVBP_DW_CHAN_BLOCK2X2(V, T, j, L)                                                     \
    do {                                                                                        \
        CONVBP_DW_CHAN_BLOCK2(V, T, j, L);                                                      \
        {                                                                                       \
            T *const o_ = o2_;                                                                  \
            const T *const s_ = s2_;                                                            \
            CONVBP_DW_CHAN_BLOCK2(V, T, j, L);                                                  \
        }                                                                                       \
    } while (0)
#endif /* CONVBP_VECTORS */

/* For n_rows rows r (out + r*out_row, src + r*src_row) and columns i < count:
 * out[i*step] = sum over taps t with 0 <= ow0[t] + i < OW of src[off[t] + i] * wv[t] (zero
 * with none).  Every tap is in range on the interior lo <= i < hi, summed row by row in blocks;
 * the columns outside it are summed for all rows at once, through col (n_rows elements). */
#define CONVBP_DW_WIDTH_DEF(NAME, T, V1, V2, V4)                                                \
    CONVBP_CLONES                                                                               \
    CONVBP_UNUSED static void NAME(                                                             \
        T *restrict out, ptrdiff_t step, ptrdiff_t out_row, ptrdiff_t n_rows,                   \
        const T *restrict src, ptrdiff_t src_row, ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t count,  \
        ptrdiff_t OW, ptrdiff_t n_taps, const ptrdiff_t *restrict off,                          \
        const ptrdiff_t *restrict ow0, const T *restrict wv, T *restrict col)                   \
    {                                                                                           \
        const ptrdiff_t L = (ptrdiff_t)(sizeof(V1) / sizeof(T));                                \
        const ptrdiff_t n = hi - lo;                                                            \
        ptrdiff_t r = 0, i, t;                                                                  \
        /* Rows in pairs where the interior takes full blocks, then one by one. */              \
        if (n >= L && n_taps > 0) {                                                             \
            for (; r + 1 < n_rows; r += 2) {                                                    \
                T *const o_ = out + r * out_row + lo * step, *const o2_ = o_ + out_row;         \
                const T *const s_ = src + r * src_row + lo, *const s2_ = s_ + src_row;          \
                for (i = 0; i + L <= n; i += L)                                                 \
                    CONVBP_DW_WIDTH_BLOCK2R(V1, T, i);                                          \
                if (i < n)                                                                      \
                    CONVBP_DW_WIDTH_BLOCK2R(V1, T, n - L);                                      \
            }                                                                                   \
        }                                                                                       \
        for (; r < n_rows; ++r) {                                                               \
            T *const o_ = out + r * out_row + lo * step;                                        \
            const T *const s_ = src + r * src_row + lo;                                         \
            if (n <= 0) {                                                                       \
            } else if (n_taps == 0) {                                                           \
                for (i = 0; i < n; ++i)                                                         \
                    o_[i * step] = 0;                                                           \
            } else if (n >= L) {                                                                \
                for (i = 0; i + L <= n; i += L)                                                 \
                    CONVBP_DW_WIDTH_BLOCK(V1, T, i);                                            \
                if (i < n)                                                                      \
                    CONVBP_DW_WIDTH_BLOCK(V1, T, n - L);                                        \
            } else if (n >= L / 2) {                                                            \
                CONVBP_DW_WIDTH_BLOCK(V2, T, 0);                                                \
                CONVBP_DW_WIDTH_BLOCK(V2, T, n - L / 2);                                        \
            } else if (n >= L / 4) {                                                            \
                CONVBP_DW_WIDTH_BLOCK(V4, T, 0);                                                \
                CONVBP_DW_WIDTH_BLOCK(V4, T, n - L / 4);                                        \
            } else {                                                                            \
                for (i = 0; i < n; ++i) {                                                       \
                    T acc_ = s_[off[0] + i] * wv[0];                                            \
                    for (t = 1; t < n_taps; ++t)                                                \
                        acc_ = acc_ + s_[off[t] + i] * wv[t];                                   \
                    o_[i * step] = acc_;                                                        \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        /* Edge columns: the same taps are in range in every row, so each column is summed down \
         * the rows, tap by tap, into col. */                                                   \
        for (i = 0; i < count; ++i) {                                                           \
            int first = 1;                                                                      \
            if (i == lo && n > 0)                                                               \
                i = hi;                                                                         \
            if (i >= count)                                                                     \
                break;                                                                          \
            for (t = 0; t < n_taps; ++t) {                                                      \
                const ptrdiff_t ow_ = ow0[t] + i;                                               \
                if (ow_ < 0 || ow_ >= OW)                                                       \
                    continue;                                                                   \
                const T *const c_ = src + off[t] + i;                                           \
                const T w_ = wv[t];                                                             \
                if (first) {                                                                    \
                    for (r = 0; r < n_rows; ++r)                                                \
                        col[r] = c_[r * src_row] * w_;                                          \
                } else {                                                                        \
                    for (r = 0; r < n_rows; ++r)                                                \
                        col[r] = col[r] + c_[r * src_row] * w_;                                 \
                }                                                                               \
                first = 0;                                                                      \
            }                                                                                   \
            for (r = 0; r < n_rows; ++r)                                                        \
                out[r * out_row + i * step] = first ? 0 : col[r];                               \
        }                                                                                       \
    }

/* For n_pix pixels p: out[p*out_step + j] = sum over taps t of
 * src[p*src_step + s_off[t] + j] * filt[w_off[t] + j], for j < F (zero with no taps). */
#define CONVBP_DW_CHANNELS_DEF(NAME, T, V1, V2, V4)                                             \
    CONVBP_CLONES                                                                               \
    CONVBP_UNUSED static void NAME(                                                             \
        T *restrict out, ptrdiff_t out_step, ptrdiff_t n_pix, ptrdiff_t src_step, ptrdiff_t F,  \
        ptrdiff_t n_taps, const T *restrict src, const ptrdiff_t *restrict s_off,               \
        const T *restrict filt, const ptrdiff_t *restrict w_off)                                \
    {                                                                                           \
        const ptrdiff_t L = (ptrdiff_t)(sizeof(V1) / sizeof(T));                                \
        ptrdiff_t p = 0, j;                                                                     \
        if (n_taps > 0 && F >= 2 * L && F < 4 * L) {                                            \
            /* Few channels: pixels in pairs over pairs of blocks, then the rest as below       \
             * (measured: with 4 blocks or more, single pixels are as fast or faster). */       \
            for (; p + 1 < n_pix; p += 2) {                                                     \
                T *const o_ = out + p * out_step, *const o2_ = o_ + out_step;                   \
                const T *const s_ = src + p * src_step, *const s2_ = s_ + src_step;             \
                for (j = 0; j + 2 * L <= F; j += 2 * L)                                         \
                    CONVBP_DW_CHAN_BLOCK2X2(V1, T, j, L);                                       \
                if (j < F) {                                                                    \
                    CONVBP_DW_CHAN_BLOCK(V1, T, F - L);                                         \
                    if (j + L < F)                                                              \
                        CONVBP_DW_CHAN_BLOCK(V1, T, F - 2 * L);                                 \
                    {                                                                           \
                        T *const o_ = o2_;                                                      \
                        const T *const s_ = s2_;                                                \
                        CONVBP_DW_CHAN_BLOCK(V1, T, F - L);                                     \
                        if (j + L < F)                                                          \
                            CONVBP_DW_CHAN_BLOCK(V1, T, F - 2 * L);                             \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (; p < n_pix; ++p) {                                                                \
            T *const o_ = out + p * out_step;                                                   \
            const T *const s_ = src + p * src_step;                                             \
            if (n_taps == 0) {                                                                  \
                for (j = 0; j < F; ++j)                                                         \
                    o_[j] = 0;                                                                  \
            } else if (F >= L) {                                                                \
                for (j = 0; j + 4 * L <= F; j += 4 * L)                                         \
                    CONVBP_DW_CHAN_BLOCK4(V1, T, j, L);                                         \
                if (j + 2 * L <= F) {                                                           \
                    CONVBP_DW_CHAN_BLOCK2(V1, T, j, L);                                         \
                    j += 2 * L;                                                                 \
                }                                                                               \
                if (j + L <= F) {                                                               \
                    CONVBP_DW_CHAN_BLOCK(V1, T, j);                                             \
                    j += L;                                                                     \
                }                                                                               \
                if (j < F)                                                                      \
                    CONVBP_DW_CHAN_BLOCK(V1, T, F - L);                                         \
            } else if (F >= L / 2) {                                                            \
                CONVBP_DW_CHAN_BLOCK(V2, T, 0);                                                 \
                CONVBP_DW_CHAN_BLOCK(V2, T, F - L / 2);                                         \
            } else if (F >= L / 4) {                                                            \
                CONVBP_DW_CHAN_BLOCK(V4, T, 0);                                                 \
                CONVBP_DW_CHAN_BLOCK(V4, T, F - L / 4);                                         \
            } else {                                                                            \
                for (j = 0; j < F; ++j) {                                                       \
                    T acc_ = s_[s_off[0] + j] * filt[w_off[0] + j];                             \
                    for (ptrdiff_t t_ = 1; t_ < n_taps; ++t_)                                   \
                        acc_ = acc_ + s_[s_off[t_] + j] * filt[w_off[t_] + j];                  \
                    o_[j] = acc_;                                                               \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

CONVBP_DW_WIDTH_DEF(convbp_dw_width_f32, float, convbp_f32x16, convbp_f32x8, convbp_f32x4)
CONVBP_DW_WIDTH_DEF(convbp_dw_width_f64, double, convbp_f64x8, convbp_f64x4, convbp_f64x2)
CONVBP_DW_CHANNELS_DEF(convbp_dw_channels_f32, float, convbp_f32x16, convbp_f32x8, convbp_f32x4)
CONVBP_DW_CHANNELS_DEF(convbp_dw_channels_f64, double, convbp_f64x8, convbp_f64x4, convbp_f64x2)

#if defined(__clang__) && CONVBP_MULTIVERSIONED
#pragma clang diagnostic pop
#endif

#endif /* CONVBP_SIMD_H */
