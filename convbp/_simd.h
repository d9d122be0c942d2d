/* Contiguous adds for col2im, compiled for several instruction sets and picked at load time
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

CONVBP_CLONES
static void convbp_add_f32(float *restrict dst, const float *restrict src, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; ++j)
        dst[j] += src[j];
}

CONVBP_CLONES
static void convbp_add_f64(double *restrict dst, const double *restrict src, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; ++j)
        dst[j] += src[j];
}

#endif
