# Integer helpers shared by the kernels (textually included).  C division truncates towards
# zero; convolution index arithmetic needs floor and ceiling.

cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # b > 0
    cdef Py_ssize_t q = a // b
    if a % b != 0 and a < 0:
        q -= 1
    return q


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # b > 0
    return -_floor_div(-a, b)
