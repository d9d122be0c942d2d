# How the kernels were compiled, for convbp.show_config(); included by _gemm.pyx.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CONVBP_OPENMP_VERSION _OPENMP
    #define convbp_omp_max_threads() omp_get_max_threads()
    #else
    #define CONVBP_OPENMP_VERSION 0
    #define convbp_omp_max_threads() 1
    #endif
    """
    int CONVBP_OPENMP_VERSION
    int convbp_omp_max_threads()

cdef extern from "_simd.h":
    int CONVBP_VECTORS
    int CONVBP_MULTIVERSIONED
    const char* convbp_simd_variant()


def openmp_enabled():
    """Whether the kernels were compiled with OpenMP (else their prange loops run serially)."""
    return CONVBP_OPENMP_VERSION != 0


def openmp_version():
    """The ``_OPENMP`` date the compiler defined (201511 is OpenMP 4.5); 0 without OpenMP."""
    return CONVBP_OPENMP_VERSION


def openmp_max_threads():
    """The OpenMP runtime's ``omp_get_max_threads()`` (OMP_NUM_THREADS or the core count); 1
    without OpenMP.  convbp passes its own thread count to every parallel loop instead."""
    return convbp_omp_max_threads()


def simd_info():
    """The _simd.h build: GNU C vectors or plain C, multiversioned or not, the clone in use."""
    return {
        "vector_extensions": bool(CONVBP_VECTORS),
        "multiversioned": bool(CONVBP_MULTIVERSIONED),
        "variant": convbp_simd_variant().decode("ascii"),
    }
