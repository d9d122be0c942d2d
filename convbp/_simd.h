/* Blocks of contiguous adds for col2im, compiled for several instruction sets and picked at load time
 * (GCC function multiversioning), so a portable build still uses AVX2 / AVX-512 where the
 * machine has them.  Elsewhere a plain loop the compiler vectorizes for the baseline. */
#ifndef CONVBP_SIMD_H
#define CONVBP_SIMD_H

#include <limits.h> /* defines __GLIBC__ on glibc, whose ifuncs the clones need */
#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define CONVBP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CONVBP_CLONES
#endif

/* dst[a*dst_a + b*dst_b + j] += src[a*src_a + b*src_b + j] for a < na, b < nb, j < n:
 * a block of contiguous runs in one call, so short runs (a few channels, a few output columns)
 * do not each pay for a call.  dst and src never overlap. */
CONVBP_CLONES
static void convbp_add_block_f32(float *dst, ptrdiff_t dst_a, ptrdiff_t dst_b,
                                 const float *src, ptrdiff_t src_a, ptrdiff_t src_b,
                                 ptrdiff_t na, ptrdiff_t nb, ptrdiff_t n)
{
    for (ptrdiff_t a = 0; a < na; ++a)
        for (ptrdiff_t b = 0; b < nb; ++b) {
            float *restrict d = dst + a * dst_a + b * dst_b;
            const float *restrict s = src + a * src_a + b * src_b;
            for (ptrdiff_t j = 0; j < n; ++j)
                d[j] += s[j];
        }
}

CONVBP_CLONES
static void convbp_add_block_f64(double *dst, ptrdiff_t dst_a, ptrdiff_t dst_b,
                                 const double *src, ptrdiff_t src_a, ptrdiff_t src_b,
                                 ptrdiff_t na, ptrdiff_t nb, ptrdiff_t n)
{
    for (ptrdiff_t a = 0; a < na; ++a)
        for (ptrdiff_t b = 0; b < nb; ++b) {
            double *restrict d = dst + a * dst_a + b * dst_b;
            const double *restrict s = src + a * src_a + b * src_b;
            for (ptrdiff_t j = 0; j < n; ++j)
                d[j] += s[j];
        }
}

#endif
