"""The GEMM algorithm for all three ops of a 2-D convolution, through strides.

Everything here trusts its arguments: shapes, strides, dtypes and sizes are validated by the
Python front (``convbp/_engine.py``) before a kernel is called.  Arrays arrive in a *logical*
NHWC order of axes -- an NCHW array is passed as ``arr.transpose(0, 2, 3, 1)``, a view -- and the
kernels read or write them through their strides, so no layout is ever transposed in memory.
Every GEMM is one single-threaded sgemm/dgemm call on a cache-sized chunk of output pixels, in
the orientation that keeps the copy loops contiguous (channels for NHWC memory, width for NCHW).

* input gradient (``backprop_input``): units of (image, band of input rows, band of input
  columns).  Each unit zeroes its block of the input gradient, then walks the output pixels
  that touch it in chunks: GEMM into the column buffer, col2im scatter-adds it into the block.
  A band edge recomputes the GEMM of the output pixels it shares with its neighbour.
* forward (``forward``): units of consecutive output pixels; per chunk, im2col gathers the
  input into the column buffer and the GEMM writes the output (directly when its images are
  BLAS matrices, else through a buffer copied out through strides).
* filter gradient (``backprop_filter``): units of consecutive output pixels, each GEMM-adding
  (beta = 1) its chunks into its own partial gradient; the caller sums the partials in unit
  order.

1x1, stride-1, unpadded convolutions skip im2col/col2im: the GEMM reads or writes the image.
Units never write the same memory, and the split depends only on the geometry and the machine,
so results are bitwise identical for any number of threads.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from scipy.linalg.cython_blas cimport sgemm, dgemm

include "_blas_int.pxi"
include "_build_info.pxi"
include "_copy_2d.pxi"

cdef extern from "_simd.h" nogil:
    void convbp_add_block_f32(float* dst, Py_ssize_t dst_a, Py_ssize_t dst_b,
                              const float* src, Py_ssize_t src_a, Py_ssize_t src_b,
                              Py_ssize_t na, Py_ssize_t nb, Py_ssize_t n)
    void convbp_add_block_f64(double* dst, Py_ssize_t dst_a, Py_ssize_t dst_b,
                              const double* src, Py_ssize_t src_a, Py_ssize_t src_b,
                              Py_ssize_t na, Py_ssize_t nb, Py_ssize_t n)
    void convbp_copy_block_f32(float* dst, Py_ssize_t dst_a, Py_ssize_t dst_b,
                               const float* src, Py_ssize_t src_a, Py_ssize_t src_b,
                               Py_ssize_t src_step, Py_ssize_t na, Py_ssize_t nb, Py_ssize_t n)
    void convbp_copy_block_f64(double* dst, Py_ssize_t dst_a, Py_ssize_t dst_b,
                               const double* src, Py_ssize_t src_a, Py_ssize_t src_b,
                               Py_ssize_t src_step, Py_ssize_t na, Py_ssize_t nb, Py_ssize_t n)

# Largest value a BLAS integer argument (dimension or leading dimension) can hold.
BLAS_INT_MAX = (1 << (8 * sizeof(blas_int) - 1)) - 1


cdef struct Geometry:
    # Logical sizes: input gradient (H, W, C), out_backprop (OH, OW, F), filter (KH, KW, C/groups, F).
    Py_ssize_t H, W, C, OH, OW, F, KH, KW, groups
    Py_ssize_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left
    Py_ssize_t band_rows      # input gradient: input rows per work unit
    Py_ssize_t band_cols      # input gradient: input columns per work unit
    Py_ssize_t unit_pixels    # forward, filter gradient: output pixels per work unit
    Py_ssize_t unit_images    # input gradient over whole images: images per work unit
    Py_ssize_t chunk_pixels   # output pixels per column buffer
    Py_ssize_t gemm_taps      # > 0: taps a GEMM takes at once, a chunk's GEMM split into
                              # pieces within OpenBLAS's small-matrix kernels: the forward's
                              # along its sum, the filter gradient's along its output's taps,
                              # the input gradient's along its columns' taps (from the
                              # transposed filter matrix)
    Py_ssize_t restage_rows   # forward, filter gradient: > 0: im2col reads a copy of x's rows in
                              # NHWC order, at most this many a chunk (see _restage_rows);
                              # input gradient over whole images: > 0 (H): col2im writes a copy
                              # of the unit's images in NHWC order, stored out at the end


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
    (compiled for the machine's widest vectors); strided ones are plain loops, the stride-2
    destination (an NCHW gradient at stride 2) with its step fixed so it vectorises.
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
    if dst_step == 2 and src_step == 1:
        # Stride-2 rows of an NCHW gradient: a constant step the compiler vectorises (with
        # shuffles), where the general loop below stays scalar.
        for a in range(na):
            for b in range(nb):
                d = dst + a * dst_a + b * dst_b
                s = src + a * src_a + b * src_b
                for j in range(n):
                    d[2 * j] += s[j]
        return
    for a in range(na):
        for b in range(nb):
            d = dst + a * dst_a + b * dst_b
            s = src + a * src_a + b * src_b
            for j in range(n):
                d[j * dst_step] += s[j * src_step]


cdef void _gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """Column-major C (m x n) = op(A) op(B) + beta C, the BLAS convention."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef blas_int bm = <blas_int>m, bn = <blas_int>n, bk = <blas_int>k
    cdef blas_int blda = <blas_int>lda, bldb = <blas_int>ldb, bldc = <blas_int>ldc
    cdef floating one = 1
    if floating is float:
        sgemm(&ta, &tb, &bm, &bn, &bk, &one, <float*>a, &blda, <float*>b, &bldb, &beta, c, &bldc)
    else:
        dgemm(&ta, &tb, &bm, &bn, &bk, &one, <double*>a, &blda, <double*>b, &bldb, &beta, c, &bldc)


cdef void _gemm_pieces(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                       floating* c, Py_ssize_t ldc, Py_ssize_t piece) noexcept nogil:
    """C = op(A) op(B) as _gemm with beta 0, its sum over k split into GEMMs of at most piece
    terms (piece <= 0: one GEMM), each adding into C."""
    cdef Py_ssize_t k0 = 0, kb
    if piece <= 0 or piece >= k:
        _gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, 0, c, ldc)
        return
    # Step of op(A)'s columns and op(B)'s rows in memory.
    cdef Py_ssize_t a_step = 1 if trans_a else lda, b_step = ldb if trans_b else 1
    while k0 < k:
        kb = min(piece, k - k0)
        _gemm(trans_a, trans_b, m, n, kb, a + k0 * a_step, lda, b + k0 * b_step, ldb,
              0 if k0 == 0 else 1, c, ldc)
        k0 += kb


cdef void _gemm_row_blocks(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                           Py_ssize_t k, const floating* a, Py_ssize_t lda, const floating* b,
                           Py_ssize_t ldb, floating* c, Py_ssize_t ldc,
                           Py_ssize_t block) noexcept nogil:
    """C = op(A) op(B) as _gemm with beta 0, C's m rows computed at most block at a time."""
    cdef Py_ssize_t m0 = 0, mb
    # Step of op(A)'s rows in memory.
    cdef Py_ssize_t a_step = lda if trans_a else 1
    while m0 < m:
        mb = min(block, m - m0)
        _gemm(trans_a, trans_b, mb, n, k, a + m0 * a_step, lda, b, ldb, 0, c + m0, ldc)
        m0 += mb


cdef void _gemm_column_blocks(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                              Py_ssize_t k, const floating* a, Py_ssize_t lda,
                              const floating* b, Py_ssize_t ldb, floating beta, floating* c,
                              Py_ssize_t ldc, Py_ssize_t block) noexcept nogil:
    """C = op(A) op(B) + beta C as _gemm, C's n columns computed at most block at a time
    (block <= 0: one GEMM)."""
    cdef Py_ssize_t n0 = 0, nb
    if block <= 0 or block >= n:
        _gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)
        return
    # Step of op(B)'s columns in memory.
    cdef Py_ssize_t b_step = 1 if trans_b else ldb
    while n0 < n:
        nb = min(block, n - n0)
        _gemm(trans_a, trans_b, m, nb, k, a, lda, b + n0 * b_step, ldb, beta, c + n0 * ldc,
              ldc)
        n0 += nb


cdef void _zero_block(floating* dx, Py_ssize_t row_lo, Py_ssize_t row_hi,
                      Py_ssize_t col_lo, Py_ssize_t col_hi, Py_ssize_t C,
                      Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc) noexcept nogil:
    """dx[row_lo:row_hi, col_lo:col_hi, :] = 0 through strides, the smaller stride innermost."""
    cdef Py_ssize_t ih, iw, c
    cdef bint channels_inner = (sxc if sxc >= 0 else -sxc) <= (sxw if sxw >= 0 else -sxw)
    cdef floating* row
    for ih in range(row_lo, row_hi):
        row = dx + ih * sxh
        if channels_inner:
            for iw in range(col_lo, col_hi):
                for c in range(C):
                    row[iw * sxw + c * sxc] = 0
        else:
            for c in range(C):
                for iw in range(col_lo, col_hi):
                    row[iw * sxw + c * sxc] = 0


cdef void _col2im(const Geometry* g, const floating* col, Py_ssize_t col_sp, Py_ssize_t col_sk,
                  Py_ssize_t p0, Py_ssize_t m,
                  floating* dx, Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc,
                  Py_ssize_t row_lo, Py_ssize_t row_hi,
                  Py_ssize_t col_lo, Py_ssize_t col_hi) noexcept nogil:
    """Scatter-add a column buffer into the input-gradient block [row_lo, row_hi) x
    [col_lo, col_hi).

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
                _tap_range(kw * dw - g.pad_left, sw, OW, col_lo, col_hi, &ow_lo, &ow_hi)
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
                _tap_range(iw0, dw, KW, col_lo, col_hi, &kw_lo, &kw_hi)
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
                _tap_range(kw * dw - g.pad_left, sw, OW, col_lo, col_hi, &ow_lo, &ow_hi)
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
                               Py_ssize_t dy_ld, const floating* wmat, Py_ssize_t grp,
                               Py_ssize_t taps, Py_ssize_t m, floating* cols, Py_ssize_t cols_ld,
                               bint cols_pixel_major) noexcept nogil:
    """Columns for m output pixels of group grp: (m x taps) = dy (m x F/groups) . w^T.

    dy: pixel-major (element (p, f) at p*dy_ld + f) or channel-major (at p + f*dy_ld).
    wmat: the row-major (taps x F) filter matrix, or with g.gemm_taps > 0 (pixel-major
    columns only) its transpose (F x taps), whose GEMMs are then N-N or N-T, computed
    g.gemm_taps rows of columns^T at a time (OpenBLAS's small-matrix kernels).
    cols: pixel-major (element (p, k) at p*cols_ld + k) or channel-major (at p + k*cols_ld).
    """
    cdef Py_ssize_t Fg = g.F // g.groups
    if g.gemm_taps > 0:
        _gemm_row_blocks(False, not dy_pixel_major, taps, m, Fg, wmat + grp * Fg * taps, taps,
                         dy, dy_ld, cols, cols_ld, g.gemm_taps)
    elif cols_pixel_major:
        _gemm(True, not dy_pixel_major, taps, m, Fg, wmat + grp * Fg, g.F, dy, dy_ld, 0, cols,
              cols_ld)
    else:
        _gemm(dy_pixel_major, False, m, taps, Fg, dy, dy_ld, wmat + grp * Fg, g.F, 0, cols,
              cols_ld)


cdef void _backprop_block(const Geometry* g,
                          const floating* dy, bint dy_pixel_major, Py_ssize_t dy_ld,
                          const floating* wmat,
                          floating* dx, Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc,
                          bint cols_pixel_major, Py_ssize_t direct_ld,
                          Py_ssize_t row_lo, Py_ssize_t row_hi,
                          Py_ssize_t col_lo, Py_ssize_t col_hi, floating* col) noexcept nogil:
    """Input-gradient block rows [row_lo, row_hi) x columns [col_lo, col_hi) of one image.

    With direct_ld > 0 (a 1x1, stride-1, unpadded convolution whose dx image is a BLAS matrix
    with that leading dimension) the GEMM writes straight into dx.  Otherwise the block is
    zeroed and every output pixel whose window reaches it is GEMMed into the column buffer,
    chunk by chunk, and scatter-added by col2im.  The output pixels form one flat run when the
    block spans the whole width, else one run per output row.
    """
    cdef Py_ssize_t Cg = g.C // g.groups, Fg = g.F // g.groups, OW = g.OW
    cdef Py_ssize_t taps = g.KH * g.KW * Cg
    cdef Py_ssize_t oh_lo, oh_hi, ow_lo, ow_hi, p0, p_end, m, grp, col_sp, col_sk, seg, n_seg
    cdef Py_ssize_t dy_sp = dy_ld if dy_pixel_major else 1
    cdef Py_ssize_t dy_sf = 1 if dy_pixel_major else dy_ld
    cdef Py_ssize_t dx_sp = direct_ld if cols_pixel_major else 1
    cdef bint whole_rows

    if direct_ld > 0:
        oh_lo, oh_hi, ow_lo, ow_hi = row_lo, row_hi, col_lo, col_hi
    else:
        _zero_block(dx, row_lo, row_hi, col_lo, col_hi, g.C, sxh, sxw, sxc)
        # Output rows (columns) whose window reaches a row (column) of the block.
        oh_lo = max(<Py_ssize_t>0,
                    _ceil_div(row_lo + g.pad_top - (g.KH - 1) * g.dilation_h, g.stride_h))
        oh_hi = min(g.OH, _floor_div(row_hi - 1 + g.pad_top, g.stride_h) + 1)
        if col_lo == 0 and col_hi == g.W:
            ow_lo, ow_hi = 0, OW
        else:
            ow_lo = max(<Py_ssize_t>0,
                        _ceil_div(col_lo + g.pad_left - (g.KW - 1) * g.dilation_w, g.stride_w))
            ow_hi = min(OW, _floor_div(col_hi - 1 + g.pad_left, g.stride_w) + 1)
    if oh_lo >= oh_hi or ow_lo >= ow_hi:
        return
    whole_rows = ow_lo == 0 and ow_hi == OW
    n_seg = 1 if whole_rows else oh_hi - oh_lo
    for seg in range(n_seg):
        if whole_rows:
            p0, p_end = oh_lo * OW, oh_hi * OW
        else:
            p0 = (oh_lo + seg) * OW + ow_lo
            p_end = p0 + ow_hi - ow_lo
        while p0 < p_end:
            m = min(g.chunk_pixels, p_end - p0)
            for grp in range(g.groups):
                if direct_ld > 0:
                    _gemm_columns(g, dy + p0 * dy_sp + grp * Fg * dy_sf, dy_pixel_major, dy_ld,
                                  wmat, grp, taps, m, dx + p0 * dx_sp + grp * Cg * sxc,
                                  direct_ld, cols_pixel_major)
                else:
                    # Column (pixel i, tap k) at col[i*col_sp + k*col_sk].
                    col_sp = taps if cols_pixel_major else 1
                    col_sk = 1 if cols_pixel_major else m
                    _gemm_columns(g, dy + p0 * dy_sp + grp * Fg * dy_sf, dy_pixel_major, dy_ld,
                                  wmat, grp, taps, m, col, col_sp * col_sk, cols_pixel_major)
                    _col2im(g, col, col_sp, col_sk, p0, m, dx + grp * Cg * sxc, sxh, sxw, sxc,
                            row_lo, row_hi, col_lo, col_hi)
            p0 += m


cdef void _copy_dy_chunk(const Geometry* g, const floating* dy, Py_ssize_t sdn,
                         Py_ssize_t dy_ld, Py_ssize_t q, Py_ssize_t m, floating* dybuf,
                         bint pixel_major) noexcept nogil:
    """Output pixels [q, q + m) of the flat (image, row, column) order from channel-major dy
    images (element (p, f) of image n at n*sdn + p + f*dy_ld), image piece by image piece, into
    dybuf: element (i, f) at i*F + f (pixel_major) or at i + f*m."""
    cdef Py_ssize_t P = g.OH * g.OW, i = 0, n, p, piece
    while i < m:
        n = (q + i) // P
        p = q + i - n * P
        piece = min(m - i, P - p)
        if pixel_major:
            _copy_block(dybuf + i * g.F, g.F, 0, dy + n * sdn + p, 1, 0, dy_ld, piece, 1, g.F)
        else:
            _copy_block(dybuf + i, m, 0, dy + n * sdn + p, dy_ld, 0, 1, g.F, 1, piece)
        i += piece


cdef void _backprop_images(const Geometry* g, const floating* dy, Py_ssize_t sdn,
                           bint dy_pixel_major, Py_ssize_t dy_ld, const floating* wmat,
                           floating* dx, Py_ssize_t sxn, Py_ssize_t sxh, Py_ssize_t sxw,
                           Py_ssize_t sxc, bint cols_pixel_major, Py_ssize_t n0, Py_ssize_t n1,
                           floating* col, floating* dybuf, floating* stage) noexcept nogil:
    """Whole images [n0, n1) of the input gradient: a chunk's GEMM runs over the pixels of
    several small images (OpenBLAS packs the filter once a GEMM, not once an image), col2im
    image piece by piece.

    dy's images are one pixel-major matrix (image stride sdn = OH*OW*dy_ld), or channel-major,
    copied piece by piece into dybuf (element (i, f) at i + f*m).  With stage (not NULL),
    col2im adds into the images there in NHWC order (runs of KW*C/groups values a pixel, not
    strided runs along the width) and they are stored out into dx at the end."""
    cdef Py_ssize_t Cg = g.C // g.groups, Fg = g.F // g.groups, P = g.OH * g.OW
    cdef Py_ssize_t taps = g.KH * g.KW * Cg, image = g.H * g.W * g.C
    cdef Py_ssize_t q = n0 * P, q_end = n1 * P, m, grp, col_sp, col_sk, i, n, p, piece, j
    cdef Py_ssize_t on = image if stage != NULL else sxn
    cdef Py_ssize_t oh = g.W * g.C if stage != NULL else sxh
    cdef Py_ssize_t ow = g.C if stage != NULL else sxw
    cdef Py_ssize_t oc = 1 if stage != NULL else sxc
    cdef floating* out = stage if stage != NULL else dx + n0 * sxn  # image n0's gradient
    if stage != NULL:
        for j in range((n1 - n0) * image):
            stage[j] = 0
    else:
        for n in range(n1 - n0):
            _zero_block(out + n * on, 0, g.H, 0, g.W, g.C, sxh, sxw, sxc)
    while q < q_end:
        m = min(g.chunk_pixels, q_end - q)
        col_sp = taps if cols_pixel_major else 1
        col_sk = 1 if cols_pixel_major else m
        if not dy_pixel_major:
            _copy_dy_chunk(g, dy, sdn, dy_ld, q, m, dybuf, False)
        for grp in range(g.groups):
            if dy_pixel_major:
                _gemm_columns(g, dy + q * dy_ld + grp * Fg, True, dy_ld, wmat, grp, taps, m, col,
                              col_sp * col_sk, cols_pixel_major)
            else:
                _gemm_columns(g, dybuf + grp * Fg * m, False, m, wmat, grp, taps, m, col,
                              col_sp * col_sk, cols_pixel_major)
            i = 0
            while i < m:
                n = (q + i) // P
                p = q + i - n * P
                piece = min(m - i, P - p)
                _col2im(g, col + i * col_sp, col_sp, col_sk, p, piece,
                        out + (n - n0) * on + grp * Cg * oc, oh, ow, oc, 0, g.H, 0, g.W)
                i += piece
        q += m
    if stage != NULL:
        for n in range(n0, n1):
            _store(stage + (n - n0) * image, True, g.C, g.H * g.W, g.C, g.W, 0, dx + n * sxn,
                   sxh, sxw, sxc)


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
    wmat        IN   (KH*KW*C/groups, F) filter matrix, row-major; with gemm_taps > 0 its
                     transpose (F, KH*KW*C/groups)
    dx          OUT  (N, H, W, C) logical axes, any strides, fully overwritten
    workspace   --   (num_threads, >= chunk_pixels*KH*KW*C/groups) column buffers, one per
                     thread; with unit_images > 1 and channel-major dy, then chunk_pixels*F for
                     a chunk of dy; with restage_rows, then unit_images*H*W*C for the images
    dy_pixel_major   True: image element (p, f) at p*dy_ld + f; False: at p + f*dy_ld
    cols_pixel_major column-buffer orientation, chosen so col2im's inner loop is contiguous in dx
    direct_ld        > 0: a 1x1/stride-1/unpadded convolution whose dx images are BLAS matrices
                     in the cols_pixel_major orientation with this leading dimension: the GEMM
                     writes dx directly, no column buffer
    A work unit is one (image, band of band_rows rows, band of band_cols columns) block of dx,
    or unit_images whole images when that is more than one (direct_ld == 0; dy's images one
    pixel-major matrix, or channel-major and copied a chunk at a time).
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t N = dx.shape[0]
    cdef Py_ssize_t n_rows = _ceil_div(g.H, g.band_rows), n_cols = _ceil_div(g.W, g.band_cols)
    cdef Py_ssize_t unit, n, b, row_lo, col_lo
    cdef Py_ssize_t sxh = dx.strides[1] // isz, sxw = dx.strides[2] // isz, sxc = dx.strides[3] // isz
    cdef Py_ssize_t col_len = g.chunk_pixels * g.KH * g.KW * (g.C // g.groups)
    cdef Py_ssize_t dy_len = 0 if dy_pixel_major else g.chunk_pixels * g.F
    if N == 0 or n_rows == 0 or n_cols == 0:
        return
    if g.unit_images > 1:
        for unit in prange(_ceil_div(N, g.unit_images), nogil=True, num_threads=num_threads,
                           schedule='dynamic'):
            _backprop_images(&g, &dy[0, 0, 0, 0], dy.strides[0] // isz, dy_pixel_major, dy_ld,
                             &wmat[0, 0], &dx[0, 0, 0, 0], dx.strides[0] // isz, sxh, sxw, sxc,
                             cols_pixel_major, unit * g.unit_images,
                             min(N, (unit + 1) * g.unit_images), &workspace[threadid(), 0],
                             &workspace[threadid(), col_len] if not dy_pixel_major
                             else <floating*>NULL,
                             &workspace[threadid(), col_len + dy_len] if g.restage_rows
                             else <floating*>NULL)
        return
    for unit in prange(N * n_rows * n_cols, nogil=True, num_threads=num_threads,
                       schedule='dynamic'):
        n = unit // (n_rows * n_cols)
        b = unit - n * (n_rows * n_cols)
        row_lo = (b // n_cols) * g.band_rows
        col_lo = (b % n_cols) * g.band_cols
        _backprop_block(&g, &dy[n, 0, 0, 0], dy_pixel_major, dy_ld, &wmat[0, 0],
                        &dx[n, 0, 0, 0], sxh, sxw, sxc, cols_pixel_major, direct_ld,
                        row_lo, min(row_lo + g.band_rows, g.H),
                        col_lo, min(col_lo + g.band_cols, g.W), &workspace[threadid(), 0])


# ---------------------------------------------------------------------------------------------
# im2col: the forward convolution and the filter gradient read the input through a column
# buffer, the transpose of what col2im scatters.

cdef inline void _copy_block(floating* dst, Py_ssize_t dst_a, Py_ssize_t dst_b,
                             const floating* src, Py_ssize_t src_a, Py_ssize_t src_b,
                             Py_ssize_t src_step, Py_ssize_t na, Py_ssize_t nb,
                             Py_ssize_t n) noexcept nogil:
    """dst[a*dst_a + b*dst_b + j] = src[a*src_a + b*src_b + j*src_step] (src NULL: 0) for
    a < na, b < nb, j < n: steps 1 to 8 and zeros by the SIMD routine (compiled for the
    machine's widest vectors), other steps by a plain loop."""
    cdef Py_ssize_t a, b, j
    cdef floating* d
    cdef const floating* s
    if na <= 0 or nb <= 0 or n <= 0:
        return
    if src != NULL and not 1 <= src_step <= 8:
        # Other steps: the SIMD routine's variable-step loop took twice the time of this plain
        # one (the 7x7 stem's NHWC filter gradient, step 6, before it had constant steps).
        for a in range(na):
            for b in range(nb):
                d = dst + a * dst_a + b * dst_b
                s = src + a * src_a + b * src_b
                for j in range(n):
                    d[j] = s[j * src_step]
        return
    if floating is float:
        convbp_copy_block_f32(dst, dst_a, dst_b, src, src_a, src_b, src_step, na, nb, n)
    else:
        convbp_copy_block_f64(dst, dst_a, dst_b, src, src_a, src_b, src_step, na, nb, n)


cdef inline void _im2col_edge_pixel(const Geometry* g, floating* dst, const floating* src,
                                    Py_ssize_t iw0, Py_ssize_t sxw,
                                    Py_ssize_t sxc) noexcept nogil:
    """One pixel's taps of one kernel row, pixel-major, some in the padding: src is x's input
    row, iw0 the pixel's first input column."""
    cdef Py_ssize_t Cg = g.C // g.groups, KW = g.KW, dw = g.dilation_w, kw_lo, kw_hi
    _tap_range(iw0, dw, KW, 0, g.W, &kw_lo, &kw_hi)
    kw_lo = min(kw_lo, KW)  # none inside: _tap_range's empty range may start past KW
    kw_hi = max(min(kw_hi, KW), kw_lo)
    _copy_block(dst, 0, 0, <const floating*>NULL, 0, 0, 1, 1, 1, kw_lo * Cg)
    _copy_block(dst + kw_lo * Cg, 0, Cg, src + (iw0 + kw_lo * dw) * sxw, 0, dw * sxw, sxc, 1,
                kw_hi - kw_lo, Cg)
    _copy_block(dst + kw_hi * Cg, 0, 0, <const floating*>NULL, 0, 0, 1, 1, 1, (KW - kw_hi) * Cg)


cdef void _im2col_rows(const Geometry* g, const floating* x, Py_ssize_t sxh, Py_ssize_t sxw,
                       Py_ssize_t sxc, Py_ssize_t oh, Py_ssize_t rows, Py_ssize_t ow_a,
                       Py_ssize_t ow_b, floating* col, Py_ssize_t ld,
                       bint cols_pixel_major) noexcept nogil:
    """im2col of output pixels (oh + r, ow), r < rows, ow_a <= ow < ow_b (whole rows when
    rows > 1), at local pixel index r*(ow_b - ow_a) + ow - ow_a of col: runs along channels,
    pixel after pixel, for every pixel whose taps all lie inside the row (NHWC memory); runs
    along output columns for every row a tap reads inside the image (NCHW memory)."""
    cdef Py_ssize_t Cg = g.C // g.groups, KW = g.KW, KH = g.KH, OW = g.OW, H = g.H, W = g.W
    cdef Py_ssize_t sw = g.stride_w, dw = g.dilation_w, sh = g.stride_h, dh = g.dilation_h
    cdef Py_ssize_t pt = g.pad_top, pl = g.pad_left, seg = ow_b - ow_a, run = KW * Cg
    cdef Py_ssize_t r, ow, ih, kh, kw, in_lo, in_hi, r_lo, r_hi, c_lo, c_hi, kh_lo, kh_hi
    cdef bint merge_taps = dw * sxw == Cg * sxc  # a pixel's taps of a kernel row are one run
    cdef floating* dst
    cdef floating* base
    cdef const floating* src
    if cols_pixel_major:  # element (i, k) at col[i*ld + k]
        # Output columns all of whose taps lie inside the row.
        _tap_range(-pl, sw, OW, 0, W - (KW - 1) * dw, &in_lo, &in_hi)
        in_lo = min(max(in_lo, ow_a), ow_b)
        in_hi = max(min(in_hi, ow_b), in_lo)
        for r in range(rows):
            base = col + (r * seg - ow_a) * ld  # pixel ow of row r at base + ow*ld
            ih = (oh + r) * sh - pt  # kernel row kh reads input row ih + kh*dh
            _tap_range(ih, dh, KH, 0, H, &kh_lo, &kh_hi)
            kh_lo = min(kh_lo, KH)  # none inside: the empty range may start past KH
            kh_hi = max(min(kh_hi, KH), kh_lo)
            # Kernel rows in the padding: zeros.
            _copy_block(base + ow_a * ld, ld, 0, <const floating*>NULL, 0, 0, 1, seg, 1,
                        kh_lo * run)
            _copy_block(base + ow_a * ld + kh_hi * run, ld, 0, <const floating*>NULL, 0, 0, 1,
                        seg, 1, (KH - kh_hi) * run)
            if kh_hi == kh_lo:
                continue
            dst = base + kh_lo * run
            src = x + (ih + kh_lo * dh) * sxh
            for ow in range(ow_a, in_lo):  # the edge pixels, kernel row by kernel row
                for kh in range(kh_hi - kh_lo):
                    _im2col_edge_pixel(g, dst + ow * ld + kh * run, src + kh * dh * sxh,
                                       ow * sw - pl, sxw, sxc)
            for ow in range(in_hi, ow_b):
                for kh in range(kh_hi - kh_lo):
                    _im2col_edge_pixel(g, dst + ow * ld + kh * run, src + kh * dh * sxh,
                                       ow * sw - pl, sxw, sxc)
            # The inner pixels one after another, each one's taps written in order, so col is
            # filled front to back in whole cache lines: a pass over the pixels for each
            # kernel row wrote runs shorter than a line (21 floats: the 7x7 stem, 3 channels).
            src = src + (in_lo * sw - pl) * sxw
            if merge_taps:  # one run of KW*Cg a kernel row
                _copy_block(dst + in_lo * ld, ld, run, src, sw * sxw, dh * sxh, sxc,
                            in_hi - in_lo, kh_hi - kh_lo, run)
            else:  # a run of Cg a tap (dilated, grouped): a block per kernel row
                for kh in range(kh_hi - kh_lo):
                    _copy_block(dst + in_lo * ld + kh * run, ld, Cg, src + kh * dh * sxh,
                                sw * sxw, dw * sxw, sxc, in_hi - in_lo, KW, Cg)
        return
    # Element (i, k) at col[i + k*ld]; pixel (r, ow) of channel c, tap (kh, kw) at
    # dst + c*ld + r*seg + ow.
    for kh in range(g.KH):
        # The rows whose tap kh lands inside the image.
        _tap_range(oh * sh - pt + kh * dh, sh, rows, 0, H, &r_lo, &r_hi)
        r_lo = min(r_lo, rows)  # none inside: the empty range may start past the rows
        r_hi = max(min(r_hi, rows), r_lo)
        for kw in range(KW):
            # The output columns whose tap kw lands inside the image.
            _tap_range(kw * dw - pl, sw, OW, 0, W, &c_lo, &c_hi)
            c_lo = min(max(c_lo, ow_a), ow_b)
            c_hi = max(min(c_hi, ow_b), c_lo)
            dst = col + (kh * KW + kw) * Cg * ld - ow_a
            _copy_block(dst + ow_a, ld, 0, <const floating*>NULL, 0, 0, 1, Cg, 1, r_lo * seg)
            _copy_block(dst + r_hi * seg + ow_a, ld, 0, <const floating*>NULL, 0, 0, 1, Cg, 1,
                        (rows - r_hi) * seg)
            dst = dst + r_lo * seg
            _copy_block(dst + ow_a, ld, seg, <const floating*>NULL, 0, 0, 1, Cg, r_hi - r_lo,
                        c_lo - ow_a)
            _copy_block(dst + c_hi, ld, seg, <const floating*>NULL, 0, 0, 1, Cg, r_hi - r_lo,
                        ow_b - c_hi)
            ih = (oh + r_lo) * sh - pt + kh * dh
            _copy_block(dst + c_lo, ld, seg, x + ih * sxh + (c_lo * sw - pl + kw * dw) * sxw,
                        sxc, sh * sxh, sw * sxw, Cg, r_hi - r_lo, c_hi - c_lo)


cdef const floating* _restage_rows(const Geometry* g, const floating* x, Py_ssize_t sxh,
                                  Py_ssize_t sxw, Py_ssize_t sxc, Py_ssize_t p0, Py_ssize_t m,
                                  floating* band) noexcept nogil:
    """Copy the input rows that output pixels p0 .. p0+m-1 read into band, in NHWC order (one
    group's channels a pixel), and return the address x's row 0 would have there: im2col then
    copies whole runs of KW*C/groups values a pixel, not runs along the width of each channel."""
    cdef Py_ssize_t Cg = g.C // g.groups, row = g.W * Cg
    cdef Py_ssize_t ih0 = max(0, (p0 // g.OW) * g.stride_h - g.pad_top)
    cdef Py_ssize_t ih1 = min(g.H, ((p0 + m - 1) // g.OW) * g.stride_h - g.pad_top
                              + (g.KH - 1) * g.dilation_h + 1)
    cdef Py_ssize_t ih, W = g.W
    if sxw == 1 and sxh == W:  # NCHW memory, rows following each other: one transpose
        _copy_2d(band, Cg, 1, x + ih0 * sxh, 1, sxc, (ih1 - ih0) * W, Cg)
    elif sxw == 1:  # NCHW memory: a transpose a row
        for ih in range(ih0, ih1):
            _copy_2d(band + (ih - ih0) * row, Cg, 1, x + ih * sxh, 1, sxc, W, Cg)
    else:
        for ih in range(ih0, ih1):
            _copy_block(band + (ih - ih0) * row, Cg, 0, x + ih * sxh, sxw, 0, sxc, g.W, 1, Cg)
    return band - ih0 * row


cdef void _im2col(const Geometry* g, const floating* x, Py_ssize_t sxh, Py_ssize_t sxw,
                  Py_ssize_t sxc, Py_ssize_t p0, Py_ssize_t m, floating* col, Py_ssize_t ld,
                  bint cols_pixel_major, floating* band) noexcept nogil:
    """Column buffer of output pixels p0 .. p0+m-1 (flat oh*OW + ow) of one image and group.

    x points at the group's first input channel.  Element (local pixel i, tap k = (kh*KW +
    kw)*C_group + c) is x[ih, iw, c] (ih = oh*stride_h - pad_top + kh*dilation_h, likewise iw),
    or 0 in the padding; it is stored at col[i*ld + k] when cols_pixel_major (runs of channels
    copied, NHWC memory) else at col[i + k*ld] (runs of output columns copied, NCHW memory).
    Filled as a partial first row, a block of whole rows, a partial last row.  With band
    (cols_pixel_major, NCHW memory) the rows read are first restaged there in NHWC order.
    """
    cdef Py_ssize_t OW = g.OW, p = p0, oh, ow_a, ow_b, rows
    if band != NULL:
        x = _restage_rows(g, x, sxh, sxw, sxc, p0, m, band)
        sxh, sxw, sxc = g.W * (g.C // g.groups), g.C // g.groups, 1
    while p < p0 + m:
        oh = p // OW
        ow_a = p - oh * OW
        if ow_a == 0 and p0 + m - p >= OW:
            rows = (p0 + m - p) // OW
            _im2col_rows(g, x, sxh, sxw, sxc, oh, rows, 0, OW,
                         col + (p - p0) * (ld if cols_pixel_major else 1), ld, cols_pixel_major)
            p += rows * OW
        else:  # a piece of one row, [ow_a, ow_b)
            ow_b = min(OW, ow_a + (p0 + m - p))
            _im2col_rows(g, x, sxh, sxw, sxc, oh, 1, ow_a, ow_b,
                         col + (p - p0) * (ld if cols_pixel_major else 1), ld, cols_pixel_major)
            p += ow_b - ow_a


cdef void _store(const floating* buf, bint pixel_major, Py_ssize_t ld, Py_ssize_t m,
                 Py_ssize_t Fg, Py_ssize_t OW, Py_ssize_t p0, floating* y, Py_ssize_t syh,
                 Py_ssize_t syw, Py_ssize_t syf) noexcept nogil:
    """y[oh, ow, f] = buf element (i, f) for the output pixels p0 + i (flat oh*OW + ow), i < m,
    f < Fg; buf pixel-major (at i*ld + f) or channel-major (at i + f*ld).  Unit-stride runs
    (channels of NHWC memory, pixels of NCHW memory: of a row, or of every row when y's rows
    follow each other) as blocks."""
    cdef Py_ssize_t p, oh, ow_a, ow_b, i0
    cdef bint rows_follow = syh == OW * syw
    cdef floating* dst
    p = p0
    while p < p0 + m:
        oh = p // OW
        ow_a = p - oh * OW
        ow_b = ow_a + (p0 + m - p) if rows_follow else min(OW, ow_a + (p0 + m - p))
        i0 = p - p0
        dst = y + oh * syh
        if pixel_major and syf == 1:
            _copy_block(dst + ow_a * syw, syw, 0, buf + i0 * ld, ld, 0, 1, ow_b - ow_a, 1, Fg)
        elif not pixel_major and syw == 1:
            _copy_block(dst + ow_a, syf, 0, buf + i0, ld, 0, 1, Fg, 1, ow_b - ow_a)
        elif pixel_major:  # a transpose (8 x 8 blocks when y's width has unit stride)
            _copy_2d(dst + ow_a * syw, syw, syf, buf + i0 * ld, ld, 1, ow_b - ow_a, Fg)
        else:
            _copy_2d(dst + ow_a * syw, syw, syf, buf + i0, 1, ld, ow_b - ow_a, Fg)
        p += ow_b - ow_a


cdef inline const floating* _columns(const Geometry* g, const floating* x, Py_ssize_t sxh,
                                     Py_ssize_t sxw, Py_ssize_t sxc, bint cols_pixel_major,
                                     Py_ssize_t x_ld, Py_ssize_t grp, Py_ssize_t p0,
                                     Py_ssize_t m, floating* col, Py_ssize_t* ld,
                                     floating* band) noexcept nogil:
    """The column matrix of output pixels p0 .. p0+m-1 for group grp, and its leading dimension:
    x itself when x_ld > 0 (a 1x1, stride-1, unpadded convolution whose x image is a BLAS
    matrix in the cols_pixel_major orientation), else col filled by im2col."""
    cdef Py_ssize_t Cg = g.C // g.groups
    if x_ld > 0:
        ld[0] = x_ld
        if cols_pixel_major:
            return x + p0 * x_ld + grp * Cg
        return x + p0 + grp * Cg * x_ld
    ld[0] = g.KH * g.KW * Cg if cols_pixel_major else m
    _im2col(g, x + grp * Cg * sxc, sxh, sxw, sxc, p0, m, col, ld[0], cols_pixel_major, band)
    return col


cdef void _forward_pixels(const Geometry* g, const floating* x, Py_ssize_t sxh, Py_ssize_t sxw,
                          Py_ssize_t sxc, bint cols_pixel_major, Py_ssize_t x_ld,
                          const floating* wmat, floating* y, Py_ssize_t syh, Py_ssize_t syw,
                          Py_ssize_t syf, bint y_pixel_major, Py_ssize_t y_ld,
                          Py_ssize_t p0, Py_ssize_t p_end, floating* col,
                          floating* ybuf, floating* band) noexcept nogil:
    """Output pixels [p0, p_end) (flat oh*OW + ow) of one image, chunk by chunk and group by
    group: y (m x F/groups) = columns (m x taps) . filter (taps x F/groups).

    The GEMM writes y itself when y_ld > 0 (the y image is a BLAS matrix in the y_pixel_major
    orientation with that leading dimension), else ybuf (same orientation), copied out through
    y's strides.
    """
    cdef Py_ssize_t Cg = g.C // g.groups, Fg = g.F // g.groups
    cdef Py_ssize_t taps = g.KH * g.KW * Cg
    cdef Py_ssize_t m, grp, lda, ldo
    cdef const floating* a
    cdef floating* out
    while p0 < p_end:
        m = min(g.chunk_pixels, p_end - p0)
        for grp in range(g.groups):
            a = _columns(g, x, sxh, sxw, sxc, cols_pixel_major, x_ld, grp, p0, m, col, &lda,
                         band)
            if y_ld > 0:
                out = y + (p0 * y_ld + grp * Fg if y_pixel_major else p0 + grp * Fg * y_ld)
                ldo = y_ld
            else:
                out = ybuf
                ldo = Fg if y_pixel_major else m
            if y_pixel_major:  # y^T (Fg x m) = w^T (Fg x taps) . columns^T (taps x m)
                _gemm_pieces(False, not cols_pixel_major, Fg, m, taps, wmat + grp * Fg, g.F,
                             a, lda, out, ldo, g.gemm_taps)
            else:  # y (m x Fg) = columns (m x taps) . w (taps x Fg)
                _gemm_pieces(cols_pixel_major, True, m, Fg, taps, a, lda, wmat + grp * Fg,
                             g.F, out, ldo, g.gemm_taps)
            if y_ld == 0:
                _store(ybuf, y_pixel_major, ldo, m, Fg, g.OW, p0, y + grp * Fg * syf, syh, syw,
                       syf)
        p0 += m


cdef void _im2col_across(const Geometry* g, const floating* x, Py_ssize_t sxn, Py_ssize_t sxh,
                         Py_ssize_t sxw, Py_ssize_t sxc, Py_ssize_t grp, Py_ssize_t q,
                         Py_ssize_t m, floating* col, Py_ssize_t lda,
                         bint cols_pixel_major, floating* band) noexcept nogil:
    """Columns of output pixels [q, q + m) of the flat (image, row, column) order, group grp:
    im2col image piece by image piece into one buffer."""
    cdef Py_ssize_t Cg = g.C // g.groups, taps = g.KH * g.KW * Cg, P = g.OH * g.OW
    cdef Py_ssize_t i = 0, n, p, piece
    while i < m:
        n = (q + i) // P
        p = q + i - n * P
        piece = min(m - i, P - p)
        _im2col(g, x + n * sxn + grp * Cg * sxc, sxh, sxw, sxc, p, piece,
                col + (i * taps if cols_pixel_major else i), lda, cols_pixel_major, band)
        i += piece


cdef void _forward_across(const Geometry* g, const floating* x, Py_ssize_t sxn,
                          Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc, bint cols_pixel_major,
                          const floating* wmat, floating* y, Py_ssize_t syn, Py_ssize_t syh,
                          Py_ssize_t syw, Py_ssize_t syf, Py_ssize_t y_ld, Py_ssize_t q,
                          Py_ssize_t q_end, floating* col, floating* ybuf,
                          floating* band) noexcept nogil:
    """Output pixels [q, q_end) of the flat (image, row, column) order: a chunk's columns are
    filled image piece by image piece, so small images still make large GEMMs (OpenBLAS packs
    the filter once a GEMM, not once an image).  The GEMM writes y itself when y_ld > 0 (y's
    images one pixel-major matrix, leading dimension y_ld), else the pixel-major ybuf, copied
    out image piece by image piece through y's strides."""
    cdef Py_ssize_t Fg = g.F // g.groups, taps = g.KH * g.KW * (g.C // g.groups)
    cdef Py_ssize_t P = g.OH * g.OW
    cdef Py_ssize_t m, grp, lda, i, n, p, piece
    while q < q_end:
        m = min(g.chunk_pixels, q_end - q)
        lda = taps if cols_pixel_major else m
        for grp in range(g.groups):
            _im2col_across(g, x, sxn, sxh, sxw, sxc, grp, q, m, col, lda, cols_pixel_major,
                           band)
            # y^T (Fg x m) = w^T (Fg x taps) . columns^T (taps x m)
            if y_ld > 0:
                _gemm_pieces(False, not cols_pixel_major, Fg, m, taps, wmat + grp * Fg, g.F,
                             col, lda, y + q * y_ld + grp * Fg, y_ld, g.gemm_taps)
                continue
            _gemm_pieces(False, not cols_pixel_major, Fg, m, taps, wmat + grp * Fg, g.F, col,
                         lda, ybuf, Fg, g.gemm_taps)
            i = 0
            while i < m:
                n = (q + i) // P
                p = q + i - n * P
                piece = min(m - i, P - p)
                _store(ybuf + i * Fg, True, Fg, piece, Fg, g.OW, p,
                       y + n * syn + grp * Fg * syf, syh, syw, syf)
                i += piece
        q += m


def forward(const floating[:, :, :, :] x,
            const floating[:, ::1] wmat,
            floating[:, :, :, :] y,
            floating[:, ::1] workspace,
            Geometry g,
            bint cols_pixel_major,
            Py_ssize_t x_ld,
            bint y_pixel_major,
            Py_ssize_t y_ld,
            bint across_images,
            int num_threads):
    """Forward 2-D convolution, written into y.

    x           IN   (N, H, W, C) logical axes, any strides
    wmat        IN   (KH*KW*C/groups, F) filter matrix, row-major
    y           OUT  (N, OH, OW, F) logical axes, any strides, fully overwritten
    workspace   --   per thread: chunk_pixels*KH*KW*C/groups column buffer (unless x_ld > 0),
                     then chunk_pixels*F/groups output buffer (if y_ld == 0), then
                     restage_rows*W*C/groups for the restaged input rows (if restage_rows)
    cols_pixel_major column-buffer orientation, chosen so im2col's inner loop is contiguous in x
    x_ld             > 0: a 1x1/stride-1/unpadded convolution whose x images are BLAS matrices
                     in the cols_pixel_major orientation: the GEMM reads x, no im2col
    y_pixel_major, y_ld  the GEMM's output orientation; y_ld > 0: the y images are BLAS
                     matrices with this leading dimension, written directly
    across_images    x_ld == 0 and chunks may span images: y's images are one pixel-major
                     matrix (image stride OH*OW*y_ld) when y_ld > 0, else (restaged input rows
                     only) the GEMM writes the pixel-major output buffer
    A work unit is unit_pixels consecutive output pixels of the flat (image, row, column) order.
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t N = y.shape[0], P = g.OH * g.OW
    cdef Py_ssize_t total = N * P
    cdef Py_ssize_t n_units = _ceil_div(total, g.unit_pixels)
    cdef Py_ssize_t unit, q, q_end, n, tid, col_len, ybuf_len
    cdef Py_ssize_t sxh = x.strides[1] // isz, sxw = x.strides[2] // isz, sxc = x.strides[3] // isz
    cdef Py_ssize_t syh = y.strides[1] // isz, syw = y.strides[2] // isz, syf = y.strides[3] // isz
    if total == 0:
        return
    col_len = 0 if x_ld > 0 else g.chunk_pixels * g.KH * g.KW * (g.C // g.groups)
    ybuf_len = 0 if y_ld > 0 else g.chunk_pixels * (g.F // g.groups)
    for unit in prange(n_units, nogil=True, num_threads=num_threads, schedule='dynamic'):
        tid = threadid()
        q = unit * g.unit_pixels
        q_end = min(q + g.unit_pixels, total)
        if across_images:
            _forward_across(&g, &x[0, 0, 0, 0], x.strides[0] // isz, sxh, sxw, sxc,
                            cols_pixel_major, &wmat[0, 0], &y[0, 0, 0, 0], y.strides[0] // isz,
                            syh, syw, syf, y_ld, q, q_end, &workspace[tid, 0],
                            &workspace[tid, col_len],
                            &workspace[tid, col_len + ybuf_len] if g.restage_rows else NULL)
            q = q_end
        while q < q_end:  # the unit's piece of each image it covers
            n = q // P
            _forward_pixels(&g, &x[n, 0, 0, 0], sxh, sxw, sxc, cols_pixel_major, x_ld,
                            &wmat[0, 0], &y[n, 0, 0, 0], syh, syw, syf, y_pixel_major, y_ld,
                            q - n * P, min(P, q_end - n * P), &workspace[tid, 0],
                            &workspace[tid, col_len],
                            &workspace[tid, col_len + ybuf_len] if g.restage_rows else NULL)
            q = min((n + 1) * P, q_end)


cdef void _filter_unit(const Geometry* g, const floating* x, Py_ssize_t sxn, Py_ssize_t sxh,
                       Py_ssize_t sxw, Py_ssize_t sxc, bint cols_pixel_major, Py_ssize_t x_ld,
                       const floating* dy, Py_ssize_t sdn, bint dy_pixel_major,
                       Py_ssize_t dy_ld, bint across_images, Py_ssize_t q, Py_ssize_t q_end,
                       floating* col, floating* dybuf, floating* partial,
                       floating* band) noexcept nogil:
    """Add the filter gradient of output pixels [q, q_end) of the flat (image, row, column)
    order into partial (taps x F, row-major), chunk by chunk and group by group:
    dw^T (Fg x taps) += dy^T (Fg x m) . columns (m x taps).

    With across_images (columns from im2col) a chunk may span images -- im2col fills it image
    piece by image piece -- so small images still make large GEMMs.  dy's images are then one
    pixel-major BLAS matrix, or (dybuf not NULL) channel-major images, copied piece by piece
    into dybuf (element (i, f) at i + f*m; with band, where the input rows are restaged, at
    i*F + f, the NHWC kernel's GEMM).  Otherwise chunks stop at image boundaries.
    """
    cdef Py_ssize_t Cg = g.C // g.groups, Fg = g.F // g.groups
    cdef Py_ssize_t taps = g.KH * g.KW * Cg, P = g.OH * g.OW
    cdef Py_ssize_t m, grp, lda, n, p
    cdef Py_ssize_t dy_sp = dy_ld if dy_pixel_major else 1
    cdef Py_ssize_t dy_sf = 1 if dy_pixel_major else dy_ld
    cdef const floating* a
    while q < q_end:
        n = q // P
        p = q - n * P
        m = min(g.chunk_pixels, q_end - q)
        if not across_images:
            m = min(m, P - p)
        if dybuf != NULL:  # dy^T of the chunk; pixel-major, as NHWC memory, with band
            _copy_dy_chunk(g, dy, sdn, dy_ld, q, m, dybuf, band != NULL)
        for grp in range(g.groups):
            if across_images:
                lda = taps if cols_pixel_major else m
                _im2col_across(g, x, sxn, sxh, sxw, sxc, grp, q, m, col, lda, cols_pixel_major,
                               band)
                a = col
                n = q // P
                p = q - n * P
            else:
                a = _columns(g, x + n * sxn, sxh, sxw, sxc, cols_pixel_major, x_ld, grp, p, m,
                             col, &lda, NULL)
            if dybuf != NULL and band != NULL:
                _gemm_column_blocks(False, cols_pixel_major, Fg, taps, m, dybuf + grp * Fg,
                                    g.F, a, lda, 1, partial + grp * Fg, g.F, g.gemm_taps)
            elif dybuf != NULL:
                _gemm_column_blocks(True, cols_pixel_major, Fg, taps, m, dybuf + grp * Fg * m,
                                    m, a, lda, 1, partial + grp * Fg, g.F, g.gemm_taps)
            else:
                _gemm_column_blocks(not dy_pixel_major, cols_pixel_major, Fg, taps, m,
                                    dy + n * sdn + p * dy_sp + grp * Fg * dy_sf, dy_ld, a, lda,
                                    1, partial + grp * Fg, g.F, g.gemm_taps)
        q += m


def backprop_filter(const floating[:, :, :, :] x,
                    const floating[:, :, :, :] dy,
                    floating[:, ::1] partials,
                    floating[:, ::1] workspace,
                    Geometry g,
                    bint cols_pixel_major,
                    Py_ssize_t x_ld,
                    bint dy_pixel_major,
                    Py_ssize_t dy_ld,
                    bint across_images,
                    int num_threads):
    """Filter gradient of a 2-D convolution, one partial sum per work unit.

    x           IN   (N, H, W, C) logical axes, any strides
    dy          IN   (N, OH, OW, F) logical axes; each image a BLAS matrix (see dy_pixel_major)
    partials    OUT  (units, KH*KW*C/groups*F): unit u's sum, the (KH*KW*C/groups, F) filter
                     gradient of output pixels [u*unit_pixels, (u+1)*unit_pixels) of the flat
                     (image, row, column) order; the caller adds them up in unit order
    workspace   --   (num_threads, >= chunk_pixels*KH*KW*C/groups) column buffers, unless x_ld;
                     with across_images and channel-major dy, then chunk_pixels*F for dy, then
                     restage_rows*W*C/groups for the restaged input rows (if restage_rows)
    cols_pixel_major, x_ld  as for forward
    dy_pixel_major   True: image element (p, f) at p*dy_ld + f; False: at p + f*dy_ld
    across_images    x_ld == 0 and chunks may span images: dy's images are one pixel-major
                     matrix (image stride OH*OW*dy_ld), or channel-major (copied a chunk at a
                     time)
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t N = x.shape[0], P = g.OH * g.OW
    cdef Py_ssize_t total = N * P
    cdef Py_ssize_t unit, q, j
    cdef Py_ssize_t sxn = x.strides[0] // isz, sxh = x.strides[1] // isz
    cdef Py_ssize_t sxw = x.strides[2] // isz, sxc = x.strides[3] // isz
    cdef Py_ssize_t sdn = dy.strides[0] // isz
    cdef bint dy_chunks = across_images and not dy_pixel_major
    cdef Py_ssize_t col_len = g.chunk_pixels * g.KH * g.KW * (g.C // g.groups)
    for unit in prange(partials.shape[0], nogil=True, num_threads=num_threads,
                       schedule='dynamic'):
        for j in range(partials.shape[1]):
            partials[unit, j] = 0
        q = unit * g.unit_pixels
        _filter_unit(&g, &x[0, 0, 0, 0], sxn, sxh, sxw, sxc, cols_pixel_major, x_ld,
                     &dy[0, 0, 0, 0], sdn, dy_pixel_major, dy_ld, across_images,
                     q, min(q + g.unit_pixels, total), &workspace[threadid(), 0],
                     &workspace[threadid(), col_len] if dy_chunks else <floating*>NULL,
                     &partials[unit, 0],
                     &workspace[threadid(), col_len + g.chunk_pixels * g.F]
                     if g.restage_rows else <floating*>NULL)
