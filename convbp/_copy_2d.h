/* Strided 2-D block copies between strided arrays (NCHW memory, views) and channels-last
 * scratch: the Winograd kernel's tiles, the GEMM kernel's transposed rows and output blocks.
 * Blocked so both sides stream whole cache lines; the inner loop runs along the destination's
 * unit stride when it has one, else the source's, so GCC vectorises the contiguous side; unit
 * stride on both transposed sides goes through 8 x 8 register transposes.  Compiled for
 * AVX-512, AVX2 and the baseline; plain ISO C loops without GNU C extensions. */
#ifndef CONVBP_COPY_2D_H
#define CONVBP_COPY_2D_H

#include "_simd.h" /* CONVBP_CLONES */
#include <stddef.h>

#define CONVBP_COPY_BLOCK 8 /* rows of a block at a power-of-two stride fit an 8-way L1 set */

#if CONVBP_VECTORS
typedef int convbp_i32x8 __attribute__((vector_size(32)));
typedef long long convbp_i64x8 __attribute__((vector_size(64)));

/* Two-vector shuffles: __builtin_shufflevector (Clang, GCC >= 12) takes the lane indices,
 * older GCC's __builtin_shuffle a mask vector of type M. */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define CONVBP_SHUF8(M, a, b, i0, i1, i2, i3, i4, i5, i6, i7)                                   \
    __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
#define CONVBP_SHUF8(M, a, b, i0, i1, i2, i3, i4, i5, i6, i7)                                   \
    __builtin_shuffle(a, b, (M){i0, i1, i2, i3, i4, i5, i6, i7})
#endif

/* An 8 x 8 transpose in registers: r[j][i] -> o[i][j], three rounds of two-vector shuffles
 * (pairs, then pairs of pairs, then halves), which GCC lowers to unpack/permute instructions. */
#define CONVBP_TRANSPOSE8(V, M, r, o)                                                           \
    do {                                                                                        \
        V t_[8], u_[8];                                                                         \
        for (int k_ = 0; k_ < 4; ++k_) {                                                        \
            t_[2 * k_] = CONVBP_SHUF8(M, r[2 * k_], r[2 * k_ + 1], 0, 8, 1, 9, 2, 10, 3, 11);                     \
            t_[2 * k_ + 1] = CONVBP_SHUF8(M, r[2 * k_], r[2 * k_ + 1], 4, 12, 5, 13, 6, 14, 7, 15);                 \
        }                                                                                       \
        for (int k_ = 0; k_ < 2; ++k_) {                                                        \
            u_[4 * k_ + 0] = CONVBP_SHUF8(M, t_[4 * k_], t_[4 * k_ + 2], 0, 1, 8, 9, 2, 3, 10, 11);               \
            u_[4 * k_ + 1] = CONVBP_SHUF8(M, t_[4 * k_], t_[4 * k_ + 2], 4, 5, 12, 13, 6, 7, 14, 15);               \
            u_[4 * k_ + 2] = CONVBP_SHUF8(M, t_[4 * k_ + 1], t_[4 * k_ + 3], 0, 1, 8, 9, 2, 3, 10, 11);           \
            u_[4 * k_ + 3] = CONVBP_SHUF8(M, t_[4 * k_ + 1], t_[4 * k_ + 3], 4, 5, 12, 13, 6, 7, 14, 15);           \
        }                                                                                       \
        for (int k_ = 0; k_ < 4; ++k_) {                                                        \
            o[2 * k_] = CONVBP_SHUF8(M, u_[k_], u_[k_ + 4], 0, 1, 2, 3, 8, 9, 10, 11);                            \
            o[2 * k_ + 1] = CONVBP_SHUF8(M, u_[k_], u_[k_ + 4], 4, 5, 6, 7, 12, 13, 14, 15);                        \
        }                                                                                       \
    } while (0)

/* One 8 x 8 block at (i0, j0) of a transposing copy (see below): s_i and d_j are 1 or 2. */
#define CONVBP_BLOCK8_DEF(NAME, T, V, M)                                                        \
    CONVBP_INLINE void NAME##_block8(T *restrict dst, ptrdiff_t d_i, ptrdiff_t d_j,             \
                                     const T *restrict src, ptrdiff_t s_i, ptrdiff_t s_j,       \
                                     ptrdiff_t i0, ptrdiff_t j0)                                \
    {                                                                                           \
        V r_[8], o_[8];                                                                         \
        if (s_i == 1) {                                                                         \
            for (int k = 0; k < 8; ++k)                                                         \
                r_[k] = *(const V *)(src + i0 + (j0 + k) * s_j);                                \
        } else {                                                                                \
            for (int k = 0; k < 8; ++k) {                                                       \
                const T *p_ = src + 2 * i0 + (j0 + k) * s_j;                                    \
                r_[k] = CONVBP_SHUF8(M, *(const V *)p_, *(const V *)(p_ + 8),                   \
                                     0, 2, 4, 6, 8, 10, 12, 14);                                \
            }                                                                                   \
        }                                                                                       \
        CONVBP_TRANSPOSE8(V, M, r_, o_);                                                        \
        if (d_j == 1) {                                                                         \
            for (int k = 0; k < 8; ++k)                                                         \
                *(V *)(dst + (i0 + k) * d_i + j0) = o_[k];                                      \
        } else {                                                                                \
            for (int k = 0; k < 8; ++k)                                                         \
                for (int l = 0; l < 8; ++l)                                                     \
                    dst[(i0 + k) * d_i + (j0 + l) * d_j] = o_[k][l];                            \
        }                                                                                       \
    }

/* dst[i*d_i + j*d_j] = src[i*s_i + j*s_j] for i < ni, j < nj (zero when src is NULL). */
#define CONVBP_COPY_2D_DEF(NAME, T, V, M)                                                       \
    CONVBP_CLONES CONVBP_UNUSED static void NAME(                                     \
        T *restrict dst, ptrdiff_t d_i, ptrdiff_t d_j, const T *restrict src, ptrdiff_t s_i,    \
        ptrdiff_t s_j, ptrdiff_t ni, ptrdiff_t nj)                                              \
    {                                                                                           \
        /* Make j the axis of the smaller destination stride (written innermost). */           \
        const ptrdiff_t ad_i = d_i < 0 ? -d_i : d_i, ad_j = d_j < 0 ? -d_j : d_j;               \
        int swap = ad_i < ad_j;                                                                 \
        if (swap) {                                                                             \
            ptrdiff_t t_;                                                                       \
            t_ = d_i; d_i = d_j; d_j = t_;                                                      \
            t_ = s_i; s_i = s_j; s_j = t_;                                                      \
            t_ = ni; ni = nj; nj = t_;                                                          \
        }                                                                                       \
        if (src == NULL) {                                                                      \
            for (ptrdiff_t i = 0; i < ni; ++i)                                                  \
                for (ptrdiff_t j = 0; j < nj; ++j)                                              \
                    dst[i * d_i + j * d_j] = 0;                                                 \
            return;                                                                             \
        }                                                                                       \
        if (d_j == 1 && s_j == 1) {                                                             \
            for (ptrdiff_t i = 0; i < ni; ++i) {                                                \
                T *restrict d = dst + i * d_i;                                                  \
                const T *restrict s = src + i * s_i;                                            \
                for (ptrdiff_t j = 0; j < nj; ++j)                                              \
                    d[j] = s[j];                                                                \
            }                                                                                   \
            return;                                                                             \
        }                                                                                       \
        ptrdiff_t i8 = 0;                                                                       \
        if ((d_j == 1 || d_j == 2) && (s_i == 1 || s_i == 2)) {                                 \
            /* A transpose (strides 2 for a polyphase component of a dilated convolution):      \
             * 8 x 8 blocks through registers, the rest one by one.  A stride-2 side reads    \
             * 16 elements and keeps the even ones, or writes lane by lane (never the          \
             * interleaved elements, which another thread may be writing). */                 \
            const ptrdiff_t j8 = nj - nj % 8;                                                   \
            i8 = ni - ni % 8;                                                                   \
            /* The inner loop walks along the side with the larger outer stride, where each    \
             * block's 8 rows are 8 distinct pages: NCHW input channels read 64 KiB apart     \
             * walked across the channels thrashed the L1 set and the TLB. */                  \
            if ((s_j < 0 ? -s_j : s_j) > (d_i < 0 ? -d_i : d_i))                                \
                for (ptrdiff_t j0 = 0; j0 < j8; j0 += 8)                                        \
                    for (ptrdiff_t i0 = 0; i0 < i8; i0 += 8)                                    \
                        NAME##_block8(dst, d_i, d_j, src, s_i, s_j, i0, j0);                    \
            else                                                                                \
                for (ptrdiff_t i0 = 0; i0 < i8; i0 += 8)                                        \
                    for (ptrdiff_t j0 = 0; j0 < j8; j0 += 8)                                    \
                        NAME##_block8(dst, d_i, d_j, src, s_i, s_j, i0, j0);                    \
            for (ptrdiff_t i = 0; i < i8; ++i)                                                  \
                for (ptrdiff_t j = j8; j < nj; ++j)                                             \
                    dst[i * d_i + j * d_j] = src[i * s_i + j * s_j];                            \
        }                                                                                       \
        for (ptrdiff_t i0 = i8; i0 < ni; i0 += CONVBP_COPY_BLOCK) {                             \
            const ptrdiff_t i1 = i0 + CONVBP_COPY_BLOCK < ni ? i0 + CONVBP_COPY_BLOCK : ni;     \
            for (ptrdiff_t j0 = 0; j0 < nj; j0 += CONVBP_COPY_BLOCK) {                          \
                const ptrdiff_t j1 = j0 + CONVBP_COPY_BLOCK < nj ? j0 + CONVBP_COPY_BLOCK : nj; \
                for (ptrdiff_t i = i0; i < i1; ++i)                                             \
                    for (ptrdiff_t j = j0; j < j1; ++j)                                         \
                        dst[i * d_i + j * d_j] = src[i * s_i + j * s_j];                        \
            }                                                                                   \
        }                                                                                       \
    }

CONVBP_BLOCK8_DEF(convbp_copy_2d_f32, float, convbp_f32x8, convbp_i32x8)
CONVBP_BLOCK8_DEF(convbp_copy_2d_f64, double, convbp_f64x8, convbp_i64x8)
CONVBP_COPY_2D_DEF(convbp_copy_2d_f32, float, convbp_f32x8, convbp_i32x8)
CONVBP_COPY_2D_DEF(convbp_copy_2d_f64, double, convbp_f64x8, convbp_i64x8)
#else
#define CONVBP_COPY_2D_PLAIN(NAME, T)                                                      \
    CONVBP_UNUSED static void NAME(T *dst, ptrdiff_t d_i, ptrdiff_t d_j, const T *src,         \
                                   ptrdiff_t s_i, ptrdiff_t s_j, ptrdiff_t ni, ptrdiff_t nj)   \
    {                                                                                           \
        for (ptrdiff_t i = 0; i < ni; ++i)                                                      \
            for (ptrdiff_t j = 0; j < nj; ++j)                                                  \
                dst[i * d_i + j * d_j] = src == NULL ? 0 : src[i * s_i + j * s_j];              \
    }
CONVBP_COPY_2D_PLAIN(convbp_copy_2d_f32, float)
CONVBP_COPY_2D_PLAIN(convbp_copy_2d_f64, double)
#endif

#endif
