/* Strided 2-D block copies for the Winograd kernel: moving tiles between strided arrays (NCHW
 * memory, views) and its channels-last scratch.  Blocked so both sides stream whole cache lines;
 * the inner loop runs along the destination's unit stride when it has one, else the source's,
 * so GCC vectorises the contiguous side.  Compiled for AVX-512, AVX2 and the baseline. */
#ifndef CONVBP_WINOGRAD_COPY_H
#define CONVBP_WINOGRAD_COPY_H

#include "_simd.h" /* CONVBP_CLONES */
#include <stddef.h>

#define CONVBP_COPY_BLOCK 16

/* dst[i*d_i + j*d_j] = src[i*s_i + j*s_j] for i < ni, j < nj (zero when src is NULL). */
#define CONVBP_COPY_2D_DEF(NAME, T)                                                             \
    CONVBP_CLONES __attribute__((unused)) static void NAME(                                     \
        T *restrict dst, ptrdiff_t d_i, ptrdiff_t d_j, const T *restrict src, ptrdiff_t s_i,    \
        ptrdiff_t s_j, ptrdiff_t ni, ptrdiff_t nj)                                              \
    {                                                                                           \
        /* Make j the axis to run innermost: unit stride in dst, or else in src. */            \
        int swap = (d_i == 1 && d_j != 1) || (d_j != 1 && s_i == 1 && s_j != 1);                \
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
        for (ptrdiff_t i0 = 0; i0 < ni; i0 += CONVBP_COPY_BLOCK) {                              \
            const ptrdiff_t i1 = i0 + CONVBP_COPY_BLOCK < ni ? i0 + CONVBP_COPY_BLOCK : ni;     \
            for (ptrdiff_t j0 = 0; j0 < nj; j0 += CONVBP_COPY_BLOCK) {                          \
                const ptrdiff_t j1 = j0 + CONVBP_COPY_BLOCK < nj ? j0 + CONVBP_COPY_BLOCK : nj; \
                for (ptrdiff_t i = i0; i < i1; ++i)                                             \
                    for (ptrdiff_t j = j0; j < j1; ++j)                                         \
                        dst[i * d_i + j * d_j] = src[i * s_i + j * s_j];                        \
            }                                                                                   \
        }                                                                                       \
    }

CONVBP_COPY_2D_DEF(convbp_copy_2d_f32, float)
CONVBP_COPY_2D_DEF(convbp_copy_2d_f64, double)

#endif
