"""Compute kernels for convbp: GEMM into a per-thread column buffer, then col2im through strides.

Everything here trusts its arguments: shapes, strides, dtypes and sizes are validated by the
Python front (``convbp/_engine.py``) before a kernel is called.  Arrays arrive in a *logical*
NHWC order of axes -- an NCHW array is passed as ``arr.transpose(0, 2, 3, 1)``, a view -- and the
kernels read or write them through their strides, so no layout is ever transposed in memory.

Work is split into units of (image, band of input rows).  Each unit zeroes its band of the input
gradient, then walks the output pixels that touch the band in cache-sized chunks: one
single-threaded GEMM builds the chunk's column buffer, col2im scatter-adds it into the band.
Units never write the same memory, and how an image is split into bands depends only on the
geometry, so results are bitwise identical for any number of threads.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from scipy.linalg.cython_blas cimport sgemm, dgemm

include "_blas_int.pxi"
include "_build_info.pxi"

cdef extern from "_simd.h" nogil:
    void convbp_add_block_f32(float* dst, Py_ssize_t dst_a, Py_ssize_t dst_b,
                              const float* src, Py_ssize_t src_a, Py_ssize_t src_b,
                              Py_ssize_t na, Py_ssize_t nb, Py_ssize_t n)
    void convbp_add_block_f64(double* dst, Py_ssize_t dst_a, Py_ssize_t dst_b,
                              const double* src, Py_ssize_t src_a, Py_ssize_t src_b,
                              Py_ssize_t na, Py_ssize_t nb, Py_ssize_t n)

# Largest value a BLAS integer argument (dimension or leading dimension) can hold.
BLAS_INT_MAX = (1 << (8 * sizeof(blas_int) - 1)) - 1


cdef struct Geometry:
    # Logical sizes: input gradient (H, W, C), out_backprop (OH, OW, F), filter (KH, KW, C/groups, F).
    Py_ssize_t H, W, C, OH, OW, F, KH, KW, groups
    Py_ssize_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left
    Py_ssize_t band_rows      # input rows per work unit
    Py_ssize_t chunk_pixels   # output pixels per column buffer


include "_index.pxi"


cdef inline void _tap_range(Py_ssize_t origin, Py_ssize_t step, Py_ssize_t count,
                            Py_ssize_t lo, Py_ssize_t hi,
                            Py_ssize_t* first, Py_ssize_t* stop) noexcept nogil:
    """The k in [0, count) with lo <= origin + k*step < hi, as [first, stop); step > 0."""
    if step == 1:  # the common case, without the divisions
        first[0] = max(<Py_ssize_t>0, lo - origin)
        stop[0] = min(count, hi - origin)
    else:
        first[0] = max(<Py_ssize_t>0, _ceil_div(lo - origin, step))
        stop[0] = min(count, _ceil_div(hi - origin, step))
    if stop[0] < first[0]:
        stop[0] = first[0]


cdef inline void _add_block(floating* dst, Py_ssize_t dst_a, Py_ssize_t dst_b, Py_ssize_t dst_step,
                            const floating* src, Py_ssize_t src_a, Py_ssize_t src_b,
                            Py_ssize_t src_step, Py_ssize_t na, Py_ssize_t nb,
                            Py_ssize_t n) noexcept nogil:
    """dst[a*dst_a + b*dst_b + j*dst_step] += src[a*src_a + b*src_b + j*src_step].

    For a < na, b < nb, j < n: a block of runs.  Unit-stride runs go to the SIMD routine
    (compiled for the machine's widest vectors); strided ones are plain loops.
    """
    cdef Py_ssize_t a, b, j
    cdef floating* d
    cdef const floating* s
    if dst_step == 1 and src_step == 1:
        if floating is float:
            convbp_add_block_f32(dst, dst_a, dst_b, src, src_a, src_b, na, nb, n)
        else:
            convbp_add_block_f64(dst, dst_a, dst_b, src, src_a, src_b, na, nb, n)
        return
    for a in range(na):
        for b in range(nb):
            d = dst + a * dst_a + b * dst_b
            s = src + a * src_a + b * src_b
            for j in range(n):
                d[j * dst_step] += s[j * src_step]


cdef void _gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                floating* c, Py_ssize_t ldc) noexcept nogil:
    """Column-major C (m x n) = op(A) op(B), the BLAS convention; beta = 0."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef blas_int bm = <blas_int>m, bn = <blas_int>n, bk = <blas_int>k
    cdef blas_int blda = <blas_int>lda, bldb = <blas_int>ldb, bldc = <blas_int>ldc
    cdef floating one = 1, zero = 0
    if floating is float:
        sgemm(&ta, &tb, &bm, &bn, &bk, &one, <float*>a, &blda, <float*>b, &bldb, &zero, c, &bldc)
    else:
        dgemm(&ta, &tb, &bm, &bn, &bk, &one, <double*>a, &blda, <double*>b, &bldb, &zero, c, &bldc)


cdef void _zero_rows(floating* dx, Py_ssize_t row_lo, Py_ssize_t row_hi,
                     Py_ssize_t W, Py_ssize_t C,
                     Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc) noexcept nogil:
    """dx[row_lo:row_hi, :, :] = 0 through strides, the smaller stride innermost."""
    cdef Py_ssize_t ih, iw, c
    cdef bint channels_inner = (sxc if sxc >= 0 else -sxc) <= (sxw if sxw >= 0 else -sxw)
    cdef floating* row
    for ih in range(row_lo, row_hi):
        row = dx + ih * sxh
        if channels_inner:
            for iw in range(W):
                for c in range(C):
                    row[iw * sxw + c * sxc] = 0
        else:
            for c in range(C):
                for iw in range(W):
                    row[iw * sxw + c * sxc] = 0


cdef void _col2im(const Geometry* g, const floating* col, Py_ssize_t col_sp, Py_ssize_t col_sk,
                  Py_ssize_t p0, Py_ssize_t m,
                  floating* dx, Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc,
                  Py_ssize_t row_lo, Py_ssize_t row_hi) noexcept nogil:
    """Scatter-add a column buffer into the input-gradient rows [row_lo, row_hi).

    col holds output pixels p0 .. p0+m-1 (flat index oh*OW + ow): the value for local pixel i and
    tap column k = (kh*KW + kw)*C_group + c sits at col[i*col_sp + k*col_sk].  It is added to
    dx[ih, iw, c] with ih = oh*stride_h - pad_top + kh*dilation_h (likewise iw), through the
    element strides (sxh, sxw, sxc), so one kernel serves NHWC, NCHW and any strided view.  The
    innermost loop follows the column buffer's unit stride: channels (and, when memory allows,
    the filter-width taps merged with them) for a pixel-major buffer, output columns for a
    channel-major one.
    """
    cdef Py_ssize_t Cg = g.C // g.groups
    cdef Py_ssize_t OW = g.OW, KW = g.KW, sw = g.stride_w, dw = g.dilation_w
    cdef Py_ssize_t oh, ow, ow_a, ow_b, kh, kh_lo, kh_hi, kw, kw_lo, kw_hi, ow_lo, ow_hi
    cdef Py_ssize_t ih0, iw0, i, p, oh0, oh1, oh_lo, oh_hi
    cdef bint channels_inner = col_sk == 1
    # In a pixel-major buffer the taps kw, kw+1 of one pixel lie Cg apart; when the input's W
    # stride (times dilation) matches, (kw, c) is one contiguous run on both sides.
    cdef bint merge_taps = channels_inner and dw * sxw == Cg * sxc
    cdef floating* dst
    cdef const floating* src

    if not channels_inner and p0 % OW == 0 and m % OW == 0:
        # Whole output rows [oh0, oh1): per tap, all channels and rows in one block, each
        # channel's column-buffer row read front to back into its dx plane.
        oh0 = p0 // OW
        oh1 = oh0 + m // OW
        for kh in range(g.KH):
            # The chunk's output rows whose tap kh lands in the band.
            _tap_range(kh * g.dilation_h - g.pad_top, g.stride_h, oh1, row_lo, row_hi,
                       &oh_lo, &oh_hi)
            oh_lo = max(oh_lo, oh0)
            if oh_lo >= oh_hi:
                continue
            for kw in range(KW):
                _tap_range(kw * dw - g.pad_left, sw, OW, 0, g.W, &ow_lo, &ow_hi)
                if ow_lo >= ow_hi:
                    continue
                src = col + (oh_lo * OW + ow_lo - p0) * col_sp + (kh * KW + kw) * Cg * col_sk
                dst = dx + (oh_lo * g.stride_h - g.pad_top + kh * g.dilation_h) * sxh \
                    + (ow_lo * sw - g.pad_left + kw * dw) * sxw
                _add_block(dst, sxc, g.stride_h * sxh, sw * sxw,
                           src, col_sk, OW * col_sp, col_sp,
                           Cg, oh_hi - oh_lo, ow_hi - ow_lo)
        return

    p = p0
    while p < p0 + m:
        # One output row segment [ow_a, ow_b) of row oh lies in this chunk.
        oh = p // OW
        ow_a = p - oh * OW
        ow_b = min(OW, ow_a + (p0 + m - p))
        ih0 = oh * g.stride_h - g.pad_top
        _tap_range(ih0, g.dilation_h, g.KH, row_lo, row_hi, &kh_lo, &kh_hi)
        if kh_lo >= kh_hi:
            p += ow_b - ow_a
            continue
        if channels_inner:
            for ow in range(ow_a, ow_b):
                # The filter-width taps that land inside the image: once per pixel, not per tap.
                iw0 = ow * sw - g.pad_left
                _tap_range(iw0, dw, KW, 0, g.W, &kw_lo, &kw_hi)
                if kw_lo >= kw_hi:
                    continue
                i = oh * OW + ow - p0
                src = col + i * col_sp + (kh_lo * KW + kw_lo) * Cg * col_sk
                dst = dx + (ih0 + kh_lo * g.dilation_h) * sxh + (iw0 + kw_lo * dw) * sxw
                # All (kh, kw, c) taps of the pixel: rows kh, then taps kw, then channels.
                if merge_taps:
                    _add_block(dst, g.dilation_h * sxh, 0, sxc,
                               src, KW * Cg * col_sk, 0, col_sk,
                               kh_hi - kh_lo, 1, (kw_hi - kw_lo) * Cg)
                else:
                    _add_block(dst, g.dilation_h * sxh, dw * sxw, sxc,
                               src, KW * Cg * col_sk, Cg * col_sk, col_sk,
                               kh_hi - kh_lo, kw_hi - kw_lo, Cg)
        else:
            for kw in range(KW):
                # The output columns whose tap kw lands inside the image: once per row and tap.
                _tap_range(kw * dw - g.pad_left, sw, OW, 0, g.W, &ow_lo, &ow_hi)
                ow_lo = max(ow_lo, ow_a)
                ow_hi = min(ow_hi, ow_b)
                if ow_lo >= ow_hi:
                    continue
                i = oh * OW + ow_lo - p0
                src = col + i * col_sp + (kh_lo * KW + kw) * Cg * col_sk
                dst = dx + (ih0 + kh_lo * g.dilation_h) * sxh \
                    + (ow_lo * sw - g.pad_left + kw * dw) * sxw
                # Rows kh, then channels, then the run of output columns.
                _add_block(dst, g.dilation_h * sxh, sxc, sw * sxw,
                           src, KW * Cg * col_sk, col_sk, col_sp,
                           kh_hi - kh_lo, Cg, ow_hi - ow_lo)
        p += ow_b - ow_a


cdef inline void _gemm_columns(const Geometry* g, const floating* dy, bint dy_pixel_major,
                               Py_ssize_t dy_ld, const floating* w, Py_ssize_t taps, Py_ssize_t m,
                               floating* cols, Py_ssize_t cols_ld, bint cols_pixel_major) noexcept nogil:
    """Columns for m output pixels of one group: (m x taps) = dy (m x F/groups) . w^T.

    dy: pixel-major (element (p, f) at p*dy_ld + f) or channel-major (at p + f*dy_ld).
    w: the group's (taps x F/groups) block of the row-major filter matrix (leading dim F).
    cols: pixel-major (element (p, k) at p*cols_ld + k) or channel-major (at p + k*cols_ld).
    """
    if cols_pixel_major:
        _gemm(True, not dy_pixel_major, taps, m, g.F // g.groups, w, g.F, dy, dy_ld, cols, cols_ld)
    else:
        _gemm(dy_pixel_major, False, m, taps, g.F // g.groups, dy, dy_ld, w, g.F, cols, cols_ld)


cdef void _backprop_band(const Geometry* g,
                         const floating* dy, bint dy_pixel_major, Py_ssize_t dy_ld,
                         const floating* wmat,
                         floating* dx, Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc,
                         bint cols_pixel_major, Py_ssize_t direct_ld,
                         Py_ssize_t row_lo, Py_ssize_t row_hi, floating* col) noexcept nogil:
    """Input-gradient rows [row_lo, row_hi) of one image.

    With direct_ld > 0 (a 1x1, stride-1, unpadded convolution whose dx image is a BLAS matrix
    with that leading dimension) the GEMM writes straight into dx.  Otherwise the rows are zeroed
    and every output pixel whose window reaches them is GEMMed into the column buffer, chunk by
    chunk, and scatter-added by col2im.
    """
    cdef Py_ssize_t Cg = g.C // g.groups, Fg = g.F // g.groups
    cdef Py_ssize_t taps = g.KH * g.KW * Cg
    cdef Py_ssize_t oh_lo, oh_hi, p0, p_end, m, grp, col_sp, col_sk
    cdef Py_ssize_t dy_sp = dy_ld if dy_pixel_major else 1
    cdef Py_ssize_t dy_sf = 1 if dy_pixel_major else dy_ld
    cdef Py_ssize_t dx_sp = direct_ld if cols_pixel_major else 1

    if direct_ld > 0:
        oh_lo, oh_hi = row_lo, row_hi
    else:
        _zero_rows(dx, row_lo, row_hi, g.W, g.C, sxh, sxw, sxc)
        # Output rows oh whose window reaches a row of the band.
        oh_lo = max(<Py_ssize_t>0,
                    _ceil_div(row_lo + g.pad_top - (g.KH - 1) * g.dilation_h, g.stride_h))
        oh_hi = min(g.OH, _floor_div(row_hi - 1 + g.pad_top, g.stride_h) + 1)
    p0 = oh_lo * g.OW
    p_end = oh_hi * g.OW
    while p0 < p_end:
        m = min(g.chunk_pixels, p_end - p0)
        for grp in range(g.groups):
            if direct_ld > 0:
                _gemm_columns(g, dy + p0 * dy_sp + grp * Fg * dy_sf, dy_pixel_major, dy_ld,
                              wmat + grp * Fg, taps, m, dx + p0 * dx_sp + grp * Cg * sxc,
                              direct_ld, cols_pixel_major)
            else:
                # Column (pixel i, tap k) at col[i*col_sp + k*col_sk].
                col_sp = taps if cols_pixel_major else 1
                col_sk = 1 if cols_pixel_major else m
                _gemm_columns(g, dy + p0 * dy_sp + grp * Fg * dy_sf, dy_pixel_major, dy_ld,
                              wmat + grp * Fg, taps, m, col, col_sp * col_sk, cols_pixel_major)
                _col2im(g, col, col_sp, col_sk, p0, m, dx + grp * Cg * sxc, sxh, sxw, sxc,
                        row_lo, row_hi)
        p0 += m


def backprop_input(const floating[:, :, :, :] dy,
                   const floating[:, ::1] wmat,
                   floating[:, :, :, :] dx,
                   floating[:, ::1] workspace,
                   Geometry g,
                   bint dy_pixel_major,
                   Py_ssize_t dy_ld,
                   bint cols_pixel_major,
                   Py_ssize_t direct_ld,
                   int num_threads):
    """Input gradient of a 2-D convolution, written into dx.

    dy          IN   (N, OH, OW, F) logical axes; each image a BLAS matrix (see dy_pixel_major)
    wmat        IN   (KH*KW*C/groups, F) filter matrix, row-major
    dx          OUT  (N, H, W, C) logical axes, any strides, fully overwritten
    workspace   --   (num_threads, >= chunk_pixels*KH*KW*C/groups) column buffers, one per thread
    dy_pixel_major   True: image element (p, f) at p*dy_ld + f; False: at p + f*dy_ld
    cols_pixel_major column-buffer orientation, chosen so col2im's inner loop is contiguous in dx
    direct_ld        > 0: a 1x1/stride-1/unpadded convolution whose dx images are BLAS matrices
                     in the cols_pixel_major orientation with this leading dimension: the GEMM
                     writes dx directly, no column buffer
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t N = dx.shape[0]
    cdef Py_ssize_t n_bands = _ceil_div(g.H, g.band_rows)
    cdef Py_ssize_t unit, n, row_lo
    cdef Py_ssize_t sxh = dx.strides[1] // isz, sxw = dx.strides[2] // isz, sxc = dx.strides[3] // isz
    if N == 0 or n_bands == 0:
        return
    for unit in prange(N * n_bands, nogil=True, num_threads=num_threads, schedule='dynamic'):
        n = unit // n_bands
        row_lo = (unit % n_bands) * g.band_rows
        _backprop_band(&g, &dy[n, 0, 0, 0], dy_pixel_major, dy_ld, &wmat[0, 0],
                       &dx[n, 0, 0, 0], sxh, sxw, sxc, cols_pixel_major, direct_ld,
                       row_lo, min(row_lo + g.band_rows, g.H), &workspace[threadid(), 0])
