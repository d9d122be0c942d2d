# Blocked and transposing strided 2-D copies (_copy_2d.h), shared by the GEMM and Winograd kernels.

cdef extern from "_copy_2d.h" nogil:
    void convbp_copy_2d_f32(float* dst, Py_ssize_t d_i, Py_ssize_t d_j, const float* src,
                            Py_ssize_t s_i, Py_ssize_t s_j, Py_ssize_t ni, Py_ssize_t nj)
    void convbp_copy_2d_f64(double* dst, Py_ssize_t d_i, Py_ssize_t d_j, const double* src,
                            Py_ssize_t s_i, Py_ssize_t s_j, Py_ssize_t ni, Py_ssize_t nj)


cdef inline void _copy_2d(floating* dst, Py_ssize_t d_i, Py_ssize_t d_j, const floating* src,
                          Py_ssize_t s_i, Py_ssize_t s_j, Py_ssize_t ni,
                          Py_ssize_t nj) noexcept nogil:
    """dst[i*d_i + j*d_j] = src[i*s_i + j*s_j] (zeros when src is NULL)."""
    if ni <= 0 or nj <= 0:
        return
    if floating is float:
        convbp_copy_2d_f32(dst, d_i, d_j, src, s_i, s_j, ni, nj)
    else:
        convbp_copy_2d_f64(dst, d_i, d_j, src, s_i, s_j, ni, nj)
