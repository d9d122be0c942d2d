"""Winograd kernel: a stride-1 3x3 correlation by F(2x2, 3x3) or F(4x4, 3x3) tiles.

One kernel serves every op and layout.  It computes

    out[n, i, j, co] = sum_{a,b,ci} inp[n, i + a*d_h - pad_top, j + b*d_w - pad_left, ci]
                                    * V[a, b, ci, co]

(zero outside ``inp``; the pads may be negative or exceed the filter) for every group.  Dilation
is handled by polyphase sub-problems: output rows i = d*q + r read input rows of one phase only, so each phase
pair (r_h, r_w) is an undilated correlation on strided views -- no copies.  The input gradient
of a stride-1 convolution is this correlation of ``dy`` with the flipped, C_in/C_out-swapped
filter; the forward convolution uses the filter as it is.  Both reach here as strided views.

Pipeline (the stages, run by ``_correlate_chunk`` on one chunk of tiles):

1. filter transform  U[xi] = G w G^T per (ci, co), once per call, in parallel
                     (``transform_filter``);
2. input transform   V[t, xi, ci] = (B^T d B)[xi] of each tile's alpha x alpha input window;
3. alpha^2 GEMMs     M[t, xi, :] = V[t, xi, :] . U[xi]   (single-threaded BLAS, all tiles at once);
4. output transform  out tile = A^T M A, scattered into ``out`` through its strides.

Work units are (group, phase, chunk of tiles, part of the output channels); a chunk runs over
consecutive tiles in (n, tile row, tile column) order, across images, so small images still give
large GEMMs; wide layers with few tiles split their output channels instead of their tiles.  The split
depends on the geometry and the machine only, so results are bitwise identical for any number
of threads.  Channels-last data (unit channel stride) is read in place tile by tile; otherwise a
band of input rows is moved into channels-last scratch by 8x8 register transposes
(``_copy_2d.h``), and the output likewise.

Everything here trusts its arguments (checked by ``convbp/_engine.py``).
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport sgemm, dgemm

include "_blas_int.pxi"
include "_index.pxi"

ctypedef Py_ssize_t ssize  # the header's ptrdiff_t

cdef extern from "_winograd_transforms.h" nogil:
    # 0 in a build without GNU C vector extensions: the kernel is left out.
    int CONVBP_WINOGRAD_AVAILABLE
    # (src, s_row, s_col, dst, d_xi, n): v = B^T d B
    void convbp_wino2_input_f32(const float*, ssize, ssize, float*, ssize, ssize)
    void convbp_wino2_input_f64(const double*, ssize, ssize, double*, ssize, ssize)
    void convbp_wino4_input_f32(const float*, ssize, ssize, float*, ssize, ssize)
    void convbp_wino4_input_f64(const double*, ssize, ssize, double*, ssize, ssize)
    # (src, s_xi, dst, d_row, d_col, n): y = A^T x A
    void convbp_wino2_output_f32(const float*, ssize, float*, ssize, ssize, ssize)
    void convbp_wino2_output_f64(const double*, ssize, double*, ssize, ssize, ssize)
    void convbp_wino4_output_f32(const float*, ssize, float*, ssize, ssize, ssize)
    void convbp_wino4_output_f64(const double*, ssize, double*, ssize, ssize, ssize)
    # (src, s_row, s_col, s_c, dst, d_xi, n): u = G w G^T
    void convbp_wino2_filter_f32(const float*, ssize, ssize, ssize, float*, ssize, ssize)
    void convbp_wino2_filter_f64(const double*, ssize, ssize, ssize, double*, ssize, ssize)
    void convbp_wino4_filter_f32(const float*, ssize, ssize, ssize, float*, ssize, ssize)
    void convbp_wino4_filter_f64(const double*, ssize, ssize, ssize, double*, ssize, ssize)

    # (src, s_row, s_col, dst, d_xi, n): z = A d A^T (an m x m output-gradient tile)
    void convbp_wino2_gradout_f32(const float*, ssize, ssize, float*, ssize, ssize)
    void convbp_wino2_gradout_f64(const double*, ssize, ssize, double*, ssize, ssize)
    void convbp_wino4_gradout_f32(const float*, ssize, ssize, float*, ssize, ssize)
    void convbp_wino4_gradout_f64(const double*, ssize, ssize, double*, ssize, ssize)
    # (src, s_xi, dst, d_row, d_col, d_c, n): w = G^T x G (the 3 x 3 filter gradient)
    void convbp_wino2_gradfilter_f32(const float*, ssize, float*, ssize, ssize, ssize, ssize)
    void convbp_wino2_gradfilter_f64(const double*, ssize, double*, ssize, ssize, ssize, ssize)
    void convbp_wino4_gradfilter_f32(const float*, ssize, float*, ssize, ssize, ssize, ssize)
    void convbp_wino4_gradfilter_f64(const double*, ssize, double*, ssize, ssize, ssize, ssize)

include "_copy_2d.pxi"


# Whether this build has the Winograd kernel (the engine never calls it otherwise).
AVAILABLE = bool(CONVBP_WINOGRAD_AVAILABLE)


cdef struct Plan:
    Py_ssize_t m, alpha, xi        # output tile m x m, input tile alpha x alpha, xi = alpha^2
    Py_ssize_t N, H, W, C          # input (per group C), logical sizes
    Py_ssize_t OH, OW, F           # output (per group F = this call's block of output channels)
    Py_ssize_t co0                 # first output channel of the block, within each group
    Py_ssize_t pad_top, pad_left
    Py_ssize_t dil_h, dil_w
    Py_ssize_t tiles_h, tiles_w    # tile grid of the largest phase
    Py_ssize_t chunk_tiles, chunks # tiles per chunk, chunks per (group, phase)
    Py_ssize_t co_split            # units split the block's F output channels in this many parts
    Py_ssize_t band_w              # widest input band of one tile row in a chunk (columns)
    bint u_co_inner                # U[g, xi] stored (C, F) row-major; else (F, C)


cdef struct View:
    # One (group, phase) sub-problem: strided input and output views of one image, and pads.
    const void* inp
    void* out
    Py_ssize_t in_n, in_h, in_w, in_c, H, W
    Py_ssize_t out_n, out_h, out_w, out_c, OH, OW
    Py_ssize_t pad_top, pad_left
    Py_ssize_t tiles_h, tiles_w


cdef inline void _input_transform(Py_ssize_t m, const floating* src, Py_ssize_t s_row,
                                  Py_ssize_t s_col, floating* dst, Py_ssize_t d_xi,
                                  Py_ssize_t n) noexcept nogil:
    if floating is float:
        if m == 2:
            convbp_wino2_input_f32(src, s_row, s_col, dst, d_xi, n)
        else:
            convbp_wino4_input_f32(src, s_row, s_col, dst, d_xi, n)
    else:
        if m == 2:
            convbp_wino2_input_f64(src, s_row, s_col, dst, d_xi, n)
        else:
            convbp_wino4_input_f64(src, s_row, s_col, dst, d_xi, n)


cdef inline void _output_transform(Py_ssize_t m, const floating* src, Py_ssize_t s_xi,
                                   floating* dst, Py_ssize_t d_row, Py_ssize_t d_col,
                                   Py_ssize_t n) noexcept nogil:
    if floating is float:
        if m == 2:
            convbp_wino2_output_f32(src, s_xi, dst, d_row, d_col, n)
        else:
            convbp_wino4_output_f32(src, s_xi, dst, d_row, d_col, n)
    else:
        if m == 2:
            convbp_wino2_output_f64(src, s_xi, dst, d_row, d_col, n)
        else:
            convbp_wino4_output_f64(src, s_xi, dst, d_row, d_col, n)


cdef inline void _gradout_transform(Py_ssize_t m, const floating* src, Py_ssize_t s_row,
                                    Py_ssize_t s_col, floating* dst, Py_ssize_t d_xi,
                                    Py_ssize_t n) noexcept nogil:
    if floating is float:
        if m == 2:
            convbp_wino2_gradout_f32(src, s_row, s_col, dst, d_xi, n)
        else:
            convbp_wino4_gradout_f32(src, s_row, s_col, dst, d_xi, n)
    else:
        if m == 2:
            convbp_wino2_gradout_f64(src, s_row, s_col, dst, d_xi, n)
        else:
            convbp_wino4_gradout_f64(src, s_row, s_col, dst, d_xi, n)


cdef inline void _gemm(char ta, char tb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                       floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """Column-major C (m x n) = op(A) op(B) + beta C."""
    cdef blas_int bm = <blas_int>m, bn = <blas_int>n, bk = <blas_int>k
    cdef blas_int blda = <blas_int>lda, bldb = <blas_int>ldb, bldc = <blas_int>ldc
    cdef floating one = 1
    if floating is float:
        sgemm(&ta, &tb, &bm, &bn, &bk, &one, <float*>a, &blda, <float*>b, &bldb, &beta, c, &bldc)
    else:
        dgemm(&ta, &tb, &bm, &bn, &bk, &one, <double*>a, &blda, <double*>b, &bldb, &beta, c, &bldc)


cdef void _gather_tile(const Plan* p, const View* v, const floating* img, Py_ssize_t y0,
                       Py_ssize_t x0, floating* tile) noexcept nogil:
    """The alpha x alpha x C input window at (y0, x0) into tile (channels-last), zero outside."""
    cdef Py_ssize_t a = p.alpha, C = p.C, i, y, x_lo, x_hi
    x_lo = max(<Py_ssize_t>0, -x0)
    x_hi = min(a, v.W - x0)
    for i in range(a):
        y = y0 + i
        if y < 0 or y >= v.H or x_lo >= x_hi:
            _copy_2d(tile + i * a * C, C, 1, <const floating*>NULL, 0, 0, a, C)
            continue
        _copy_2d(tile + i * a * C, C, 1, <const floating*>NULL, 0, 0, x_lo, C)
        _copy_2d(tile + (i * a + x_lo) * C, C, 1, img + y * v.in_h + (x0 + x_lo) * v.in_w,
                 v.in_w, v.in_c, x_hi - x_lo, C)
        _copy_2d(tile + (i * a + x_hi) * C, C, 1, <const floating*>NULL, 0, 0, a - x_hi, C)


cdef void _transform_inputs(const Plan* p, const View* v, Py_ssize_t s, Py_ssize_t s_end,
                            floating* Vt, Py_ssize_t ld_tile, Py_ssize_t ld_xi, floating* tile,
                            floating* band) noexcept nogil:
    """V = B^T d B of tiles [s, s_end) (flat over n, tile row, tile column; one run within one
    tile row) into Vt: tile s + t, point xi, channel c at Vt[t*ld_tile + xi*ld_xi + c]; tile and
    band are scratch."""
    cdef Py_ssize_t m = p.m, a = p.alpha, XI = p.xi, C = p.C
    cdef Py_ssize_t per_image = v.tiles_h * v.tiles_w
    cdef Py_ssize_t n = s // per_image
    cdef Py_ssize_t ty = (s % per_image) // v.tiles_w
    cdef Py_ssize_t tx = s % v.tiles_w
    cdef Py_ssize_t tx_end = tx + (s_end - s)
    cdef const floating* img = <const floating*>v.inp + n * v.in_n
    cdef Py_ssize_t y0 = ty * m - v.pad_top
    cdef Py_ssize_t t, x0, x_lo, x_hi, bw, i, y
    if v.in_c == 1:  # channels-last: read in place, gather only tiles over an edge
        for t in range(s, s_end):
            x0 = (tx + t - s) * m - v.pad_left
            if y0 >= 0 and y0 + a <= v.H and x0 >= 0 and x0 + a <= v.W:
                _input_transform(m, img + y0 * v.in_h + x0 * v.in_w, v.in_h, v.in_w,
                                 Vt + (t - s) * ld_tile, ld_xi, C)
            else:
                _gather_tile(p, v, img, y0, x0, tile)
                _input_transform(m, tile, a * C, C, Vt + (t - s) * ld_tile, ld_xi, C)
        return
    # The band of input rows [y0, y0 + alpha) under the run, channels-last, zero outside the
    # image: a blocked transposing copy per row.
    x_lo = tx * m - v.pad_left
    bw = (tx_end - tx) * m + a - m
    for i in range(a):
        y = y0 + i
        x0 = max(x_lo, <Py_ssize_t>0)
        x_hi = min(x_lo + bw, v.W)
        if y < 0 or y >= v.H or x0 >= x_hi:
            _copy_2d(band + i * bw * C, C, 1, <const floating*>NULL, 0, 0, bw, C)
            continue
        _copy_2d(band + i * bw * C, C, 1, <const floating*>NULL, 0, 0, x0 - x_lo, C)
        _copy_2d(band + (i * bw + x0 - x_lo) * C, C, 1, img + y * v.in_h + x0 * v.in_w,
                 v.in_w, v.in_c, x_hi - x0, C)
        _copy_2d(band + (i * bw + x_hi - x_lo) * C, C, 1, <const floating*>NULL, 0, 0,
                 x_lo + bw - x_hi, C)
    for t in range(s, s_end):
        _input_transform(m, band + (t - s) * m * C, bw * C, C, Vt + (t - s) * ld_tile, ld_xi, C)


cdef void _correlate_chunk(const Plan* p, const View* v, const floating* U, Py_ssize_t t0,
                           Py_ssize_t t1, Py_ssize_t co_lo, Py_ssize_t F,
                           floating* scratch) noexcept nogil:
    """Tiles [t0, t1) (flat over n, tile row, tile column) of one sub-problem, output channels
    [co_lo, co_lo + F) of the block."""
    cdef Py_ssize_t m = p.m, a = p.alpha, XI = p.xi, C = p.C
    cdef Py_ssize_t T = p.chunk_tiles
    cdef Py_ssize_t per_image = v.tiles_h * v.tiles_w
    # Scratch: transformed inputs V (T, XI, C), GEMM results M (T, XI, F), a tile, a band.
    cdef floating* Vt = scratch
    cdef floating* Mt = Vt + T * XI * C
    cdef floating* tile = Mt + T * XI * F
    cdef floating* band = tile + XI * max(C, F)
    cdef const floating* inp = <const floating*>v.inp
    cdef floating* out = <floating*>v.out + co_lo * v.out_c
    cdef const floating* img
    cdef floating* oimg
    cdef Py_ssize_t t, s, s_end, n, ty, tx, tx_end, y0, x0, x_lo, x_hi, bw, i, j, y, k
    cdef Py_ssize_t rows, cols, xi
    cdef bint in_channels_last = v.in_c == 1
    cdef bint out_channels_last = v.out_c == 1

    # Stage 2: input transform, one segment (a run of tiles in one tile row) at a time.
    s = t0
    while s < t1:
        s_end = s + min(v.tiles_w - s % v.tiles_w, t1 - s)
        _transform_inputs(p, v, s, s_end, Vt + (s - t0) * XI * C, XI * C, C, tile, band)
        s = s_end

    # Stage 3: one GEMM per transform point, over every tile of the chunk.
    for xi in range(XI):
        if p.u_co_inner:
            _gemm(c'N', c'N', F, t1 - t0, C, U + xi * C * p.F + co_lo, p.F, Vt + xi * C, XI * C,
                  0, Mt + xi * F, XI * F)
        else:
            _gemm(c'T', c'N', F, t1 - t0, C, U + xi * C * p.F + co_lo * C, C, Vt + xi * C,
                  XI * C, 0, Mt + xi * F, XI * F)

    # Stage 4: output transform, scattered into out.
    s = t0
    while s < t1:
        n = s // per_image
        ty = (s % per_image) // v.tiles_w
        tx = s % v.tiles_w
        tx_end = min(v.tiles_w, tx + (t1 - s))
        s_end = s + (tx_end - tx)
        oimg = out + n * v.out_n
        y0 = ty * m
        rows = min(m, v.OH - y0)
        if out_channels_last:
            for t in range(s, s_end):
                x0 = (tx + t - s) * m
                if rows == m and x0 + m <= v.OW:
                    _output_transform(m, Mt + (t - t0) * XI * F, F,
                                      oimg + y0 * v.out_h + x0 * v.out_w, v.out_h, v.out_w, F)
                else:
                    _output_transform(m, Mt + (t - t0) * XI * F, F, tile, m * F, F, F)
                    cols = min(m, v.OW - x0)
                    for i in range(rows):
                        _copy_2d(oimg + (y0 + i) * v.out_h + x0 * v.out_w, v.out_w, 1,
                                 tile + i * m * F, F, 1, cols, F)
        else:
            # Tiles into a channels-last band of m output rows, then a transposing copy per row.
            bw = (tx_end - tx) * m
            for t in range(s, s_end):
                _output_transform(m, Mt + (t - t0) * XI * F, F, band + (t - s) * m * F,
                                  bw * F, F, F)
            x0 = tx * m
            cols = min(bw, v.OW - x0)
            for i in range(rows):
                _copy_2d(oimg + (y0 + i) * v.out_h + x0 * v.out_w, v.out_w, v.out_c,
                         band + i * bw * F, F, 1, cols, F)
        s = s_end


cdef View _sub_problem(const Plan* p, Py_ssize_t rh, Py_ssize_t rw, const floating* inp,
                       const Py_ssize_t* s_in, floating* out,
                       const Py_ssize_t* s_out) noexcept nogil:
    """View v of output phase (rh, rw): output rows rh, rh + d, ... read input rows of phase
    b = (rh - pad_top) mod d, with offset floor((rh - pad_top) / d) (likewise columns)."""
    cdef Py_ssize_t bh = _floor_div(rh - p.pad_top, p.dil_h)
    cdef Py_ssize_t bw_ = _floor_div(rw - p.pad_left, p.dil_w)
    cdef Py_ssize_t ph = (rh - p.pad_top) - bh * p.dil_h
    cdef Py_ssize_t pw = (rw - p.pad_left) - bw_ * p.dil_w
    cdef View v
    v.inp = inp + ph * s_in[1] + pw * s_in[2]
    v.in_n, v.in_h, v.in_w, v.in_c = s_in[0], p.dil_h * s_in[1], p.dil_w * s_in[2], s_in[3]
    v.H = _ceil_div(p.H - ph, p.dil_h)
    v.W = _ceil_div(p.W - pw, p.dil_w)
    v.out = out + rh * s_out[1] + rw * s_out[2]
    v.out_n, v.out_h, v.out_w, v.out_c = s_out[0], p.dil_h * s_out[1], p.dil_w * s_out[2], s_out[3]
    v.OH = _ceil_div(p.OH - rh, p.dil_h)
    v.OW = _ceil_div(p.OW - rw, p.dil_w)
    v.pad_top, v.pad_left = -bh, -bw_
    v.tiles_h = _ceil_div(v.OH, p.m)
    v.tiles_w = _ceil_div(v.OW, p.m)
    return v


def correlate(const floating[:, :, :, :] inp,
              const floating[::1] U,
              floating[:, :, :, :] out,
              floating[:, ::1] workspace,
              Plan p,
              Py_ssize_t groups,
              int num_threads):
    """The correlation of the module docstring for output channels [co0, co0 + F) of each group.

    inp        IN   (N, H, W, groups*C) logical axes, any strides
    U          IN   transformed filter block, (groups, xi, C, F) or (groups, xi, F, C) C-order
    out        OUT  (N, OH, OW, groups*F_total) logical axes, any strides; this block written
    workspace  --   (num_threads, per-thread scratch) rows, see ``scratch_elements``
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t s_in[4]
    cdef Py_ssize_t s_out[4]
    cdef Py_ssize_t F_total = out.shape[3] // groups
    cdef Py_ssize_t phases = p.dil_h * p.dil_w
    cdef Py_ssize_t units = groups * phases * p.chunks * p.co_split
    cdef Py_ssize_t split_f = _ceil_div(p.F, p.co_split)
    cdef Py_ssize_t unit, sub, g, phase, chunk, t0, t1, total, part, co_lo
    cdef View v
    cdef Py_ssize_t k
    for k in range(4):
        s_in[k] = inp.strides[k] // isz
        s_out[k] = out.strides[k] // isz
    if units == 0 or p.N == 0:
        return
    for unit in prange(units, nogil=True, num_threads=num_threads, schedule='dynamic'):
        part = unit % p.co_split
        chunk = (unit // p.co_split) % p.chunks
        sub = unit // (p.co_split * p.chunks)
        co_lo = part * split_f
        g = sub // phases
        phase = sub % phases
        v = _sub_problem(&p, phase // p.dil_w, phase % p.dil_w,
                         &inp[0, 0, 0, g * p.C], s_in,
                         &out[0, 0, 0, g * F_total + p.co0], s_out)
        total = p.N * v.tiles_h * v.tiles_w
        t0 = chunk * p.chunk_tiles
        t1 = min(t0 + p.chunk_tiles, total)
        if t0 < t1 and co_lo < p.F:
            _correlate_chunk(&p, &v, &U[g * p.xi * p.C * p.F], t0, t1, co_lo,
                             min(split_f, p.F - co_lo), &workspace[threadid(), 0])


def transform_filter(const floating[:, :, :, :, :] filt,
                     floating[::1] U,
                     Py_ssize_t m,
                     Py_ssize_t co0,
                     Py_ssize_t F,
                     bint u_co_inner,
                     int num_threads):
    """U = G w G^T for output channels [co0, co0 + F) of every group, computed in parallel.

    filt  IN   (groups, 3, 3, C, F_total) any strides: w[g, a, b, ci, co]
    U     OUT  (groups, xi, C, F) C-order if u_co_inner else (groups, xi, F, C)
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t G = filt.shape[0], C = filt.shape[3], xi = (m + 2) * (m + 2)
    cdef Py_ssize_t s_a = filt.strides[1] // isz, s_b = filt.strides[2] // isz
    cdef Py_ssize_t s_ci = filt.strides[3] // isz, s_co = filt.strides[4] // isz
    cdef Py_ssize_t rows = G * (C if u_co_inner else F)
    cdef Py_ssize_t r, g, k, n, s_step, i, a, b, n_max = F if u_co_inner else C
    cdef const floating* src
    cdef floating* dst
    cdef floating* row = NULL
    if rows == 0 or C == 0 or F == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        # A row whose filters are not adjacent in memory (PyTorch's (F, C, 3, 3) weight: the C
        # filters of an output channel 9 values apart) is first gathered into a contiguous
        # (3, 3, n) block: the transforms run in vectors along unit strides only, and the
        # strided ones took 4x the instructions (512 -> 512, F(4x4)).
        row = <floating*>malloc(9 * n_max * sizeof(floating))
        for r in prange(rows, schedule='static'):
            if u_co_inner:  # row r = (g, ci): the F filters of one input channel
                g = r // C
                k = r % C
                src = &filt[g, 0, 0, k, co0]
                dst = &U[(g * xi * C + k) * F]
                n = F
                s_step = s_co
            else:           # row r = (g, co): the C filters of one output channel
                g = r // F
                k = r % F
                src = &filt[g, 0, 0, 0, co0 + k]
                dst = &U[(g * xi * F + k) * C]
                n = C
                s_step = s_ci
            if s_step != 1 and row != NULL:
                for i in range(n):
                    for a in range(3):
                        for b in range(3):
                            row[(a * 3 + b) * n + i] = src[a * s_a + b * s_b + i * s_step]
                _transform_filter_row(row, 3 * n, n, 1, dst, C * F, n, m)
            else:
                _transform_filter_row(src, s_a, s_b, s_step, dst, C * F, n, m)
        free(row)


cdef inline void _transform_filter_row(const floating* src, Py_ssize_t s_a, Py_ssize_t s_b,
                                       Py_ssize_t s_step, floating* dst, Py_ssize_t d_xi,
                                       Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """u = G w G^T for the n filters of one row (see the transforms' header)."""
    if floating is float:
        if m == 2:
            convbp_wino2_filter_f32(src, s_a, s_b, s_step, dst, d_xi, n)
        else:
            convbp_wino4_filter_f32(src, s_a, s_b, s_step, dst, d_xi, n)
    else:
        if m == 2:
            convbp_wino2_filter_f64(src, s_a, s_b, s_step, dst, d_xi, n)
        else:
            convbp_wino4_filter_f64(src, s_a, s_b, s_step, dst, d_xi, n)


def scratch_elements(Py_ssize_t m, Py_ssize_t C, Py_ssize_t F, Py_ssize_t chunk_tiles,
                     Py_ssize_t band_w):
    """Per-thread scratch (elements) of ``correlate``: V, M, one tile, one band, padded."""
    cdef Py_ssize_t a = m + 2, xi = a * a
    cdef Py_ssize_t band = max(a * band_w * C, m * band_w * F)
    return (chunk_tiles * xi * (C + F) + xi * max(C, F) + band + 15) // 16 * 16 + 16


# ---------------------------------------------------------------------------------------------
# Filter gradient.  The forward tile is Y = A^T [(G w G^T) * (B^T d B)] A, so a tile's share of
# the filter gradient is G^T [(A dY A^T) * (B^T d B)] G: the products are summed over all tiles
# in the transformed domain, M[xi] = sum_t V[t, xi]^T Z[t, xi] (C x F per transform point, one
# GEMM per point and chunk of tiles), and G^T M G runs once per filter at the end.

cdef inline void _gradfilter_transform(Py_ssize_t m, const floating* src, Py_ssize_t s_xi,
                                       floating* dst, Py_ssize_t d_row, Py_ssize_t d_col,
                                       Py_ssize_t d_c, Py_ssize_t n) noexcept nogil:
    if floating is float:
        if m == 2:
            convbp_wino2_gradfilter_f32(src, s_xi, dst, d_row, d_col, d_c, n)
        else:
            convbp_wino4_gradfilter_f32(src, s_xi, dst, d_row, d_col, d_c, n)
    else:
        if m == 2:
            convbp_wino2_gradfilter_f64(src, s_xi, dst, d_row, d_col, d_c, n)
        else:
            convbp_wino4_gradfilter_f64(src, s_xi, dst, d_row, d_col, d_c, n)


cdef void _transform_grads(const Plan* p, const View* v, Py_ssize_t s, Py_ssize_t s_end,
                           floating* Zt, Py_ssize_t ld_tile, Py_ssize_t ld_xi, floating* tile,
                           floating* band) noexcept nogil:
    """Z = A dY A^T of the output-gradient tiles [s, s_end) (one run within one tile row; dY is
    v.out, zero beyond OH x OW) into Zt[t*ld_tile + xi*ld_xi + c]."""
    cdef Py_ssize_t m = p.m, XI = p.xi, F = p.F
    cdef Py_ssize_t per_image = v.tiles_h * v.tiles_w
    cdef Py_ssize_t n = s // per_image
    cdef Py_ssize_t ty = (s % per_image) // v.tiles_w
    cdef Py_ssize_t tx = s % v.tiles_w
    cdef const floating* img = <const floating*>v.out + n * v.out_n
    cdef Py_ssize_t y0 = ty * m
    cdef Py_ssize_t rows = min(m, v.OH - y0)
    cdef Py_ssize_t t, i, x0, cols, bw
    if v.out_c == 1:  # channels-last: read in place, copy only tiles over an edge
        for t in range(s, s_end):
            x0 = (tx + t - s) * m
            cols = min(m, v.OW - x0)
            if rows == m and cols == m:
                _gradout_transform(m, img + y0 * v.out_h + x0 * v.out_w, v.out_h, v.out_w,
                                   Zt + (t - s) * ld_tile, ld_xi, F)
            else:
                _copy_2d(tile, F, 1, <const floating*>NULL, 0, 0, m * m, F)
                for i in range(rows):
                    _copy_2d(tile + i * m * F, F, 1, img + (y0 + i) * v.out_h + x0 * v.out_w,
                             v.out_w, 1, cols, F)
                _gradout_transform(m, tile, m * F, F, Zt + (t - s) * ld_tile, ld_xi, F)
        return
    # The band of m output-gradient rows under the run, channels-last, zero beyond the image.
    bw = (s_end - s) * m
    x0 = tx * m
    cols = min(bw, v.OW - x0)
    for i in range(m):
        if i < rows:
            _copy_2d(band + i * bw * F, F, 1, img + (y0 + i) * v.out_h + x0 * v.out_w,
                     v.out_w, v.out_c, cols, F)
            _copy_2d(band + (i * bw + cols) * F, F, 1, <const floating*>NULL, 0, 0,
                     bw - cols, F)
        else:
            _copy_2d(band + i * bw * F, F, 1, <const floating*>NULL, 0, 0, bw, F)
    for t in range(s, s_end):
        _gradout_transform(m, band + (t - s) * m * F, bw * F, F, Zt + (t - s) * ld_tile, ld_xi,
                           F)


cdef void _filter_gradient_part(const Plan* p, const floating* inp, const Py_ssize_t* s_in,
                                const floating* dy, const Py_ssize_t* s_dy, Py_ssize_t part,
                                Py_ssize_t parts, floating* Mp,
                                floating* scratch) noexcept nogil:
    """Mp[xi] (C x F row-major) = sum Z[t, xi]^T V[t, xi] over part ``part`` of ``parts`` equal
    ranges of the tiles (flat over phase, n, tile row, tile column) of one group: chunks of
    p.chunk_tiles tiles, each transformed into scratch and reduced by one GEMM per point."""
    cdef Py_ssize_t XI = p.xi, C = p.C, F = p.F
    cdef floating* Vt = scratch
    cdef floating* Zt = Vt + p.chunk_tiles * XI * C
    cdef floating* tile = Zt + p.chunk_tiles * XI * F
    cdef floating* band = tile + XI * max(C, F)
    cdef Py_ssize_t phases = p.dil_h * p.dil_w
    cdef Py_ssize_t total = 0, offset = 0, phase, lo, hi, t0, t1, T, s, s_end, xi, k
    cdef floating beta = 0
    cdef View v
    for phase in range(phases):
        v = _sub_problem(p, phase // p.dil_w, phase % p.dil_w, inp, s_in, <floating*>dy, s_dy)
        total += p.N * v.tiles_h * v.tiles_w
    lo = _ceil_div(total, parts) * part
    hi = min(total, lo + _ceil_div(total, parts))
    for phase in range(phases):
        v = _sub_problem(p, phase // p.dil_w, phase % p.dil_w, inp, s_in, <floating*>dy, s_dy)
        T = p.N * v.tiles_h * v.tiles_w  # this phase's tiles [offset, offset + T) of the group
        t0 = max(lo - offset, <Py_ssize_t>0)
        t1 = min(hi - offset, T)
        offset += T
        while t0 < t1:
            T = min(p.chunk_tiles, t1 - t0)
            # Each point's tiles one contiguous (T, C) or (T, F) block: the GEMM reads it whole.
            s = t0
            while s < t0 + T:
                s_end = s + min(v.tiles_w - s % v.tiles_w, t0 + T - s)
                _transform_inputs(p, &v, s, s_end, Vt + (s - t0) * C, C, T * C, tile, band)
                _transform_grads(p, &v, s, s_end, Zt + (s - t0) * F, F, T * F, tile, band)
                s = s_end
            for xi in range(XI):  # Mp[xi] (column-major F x C) += Z[xi]^T V[xi]
                _gemm(c'N', c'T', F, C, T, Zt + xi * T * F, F, Vt + xi * T * C, C, beta,
                      Mp + xi * C * F, F)
            beta = 1
            t0 += T
    if beta == 0:  # no tile at all: a zero partial
        for k in range(XI * C * F):
            Mp[k] = 0


def filter_gradient(const floating[:, :, :, :] inp,
                    const floating[:, :, :, :] dy,
                    floating[:, :, :, :] dw,
                    floating[::1] M,
                    floating[:, ::1] workspace,
                    Plan p,
                    Py_ssize_t groups,
                    Py_ssize_t parts,
                    int num_threads):
    """dw[a, b, ci, g*F_total + co0 + co] = sum inp[n, i + a*d_h - pad_top, j + b*d_w - pad_left,
    g*C + ci] * dy[n, i, j, g*F_total + co0 + co] for the block of p.F output channels at p.co0.

    inp        IN   (N, H, W, groups*C) logical axes, any strides
    dy         IN   (N, OH, OW, groups*F_total) logical axes, any strides
    dw         OUT  (3, 3, C, groups*F_total) logical axes, any strides; this block written
    M          --   (groups, parts, xi, C, F) partial sums
    workspace  --   (num_threads, per-thread scratch) rows, see ``filter_scratch_elements``

    Work units are (group, part): each sums its share of the tiles into its own partial, one
    unit at a time per thread; the partials are then added in part order, fused with the final
    transform dw = G^T M G.  The split depends on the plan only: results are bitwise identical
    for any num_threads.
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t s_in[4]
    cdef Py_ssize_t s_dy[4]
    cdef Py_ssize_t F_total = dy.shape[3] // groups
    cdef Py_ssize_t XI = p.xi, C = p.C, F = p.F
    cdef Py_ssize_t part_size = XI * C * F
    cdef Py_ssize_t unit, g, row, k, q, xi, c, a, b, d_a, d_b, d_c
    cdef floating* dst
    cdef floating* out
    cdef floating* out_row = NULL
    cdef const floating* src
    for k in range(4):
        s_in[k] = inp.strides[k] // isz
        s_dy[k] = dy.strides[k] // isz
    if p.N == 0 or C == 0 or F == 0:
        return
    for unit in prange(groups * parts, nogil=True, num_threads=num_threads, schedule='dynamic'):
        g = unit // parts
        _filter_gradient_part(&p, &inp[0, 0, 0, g * C], s_in,
                              &dy[0, 0, 0, g * F_total + p.co0], s_dy, unit % parts, parts,
                              &M[unit * part_size], &workspace[threadid(), 0])
    # Per (group, input channel): the partials added in order, then dw = G^T M G.  Where dw's
    # output channels are not adjacent (PyTorch's (F, C, 3, 3) weight) the transform writes a
    # contiguous (3, 3, F) row, scattered afterwards: it runs in vectors along unit strides only.
    d_a, d_b, d_c = dw.strides[0] // isz, dw.strides[1] // isz, dw.strides[3] // isz
    with nogil, parallel(num_threads=num_threads):
        out_row = <floating*>malloc(9 * F * sizeof(floating)) if d_c != 1 else NULL
        for row in prange(groups * C, schedule='static'):
            g = row // C
            k = row % C
            dst = &M[g * parts * part_size + k * F]
            for q in range(1, parts):
                src = &M[(g * parts + q) * part_size + k * F]
                for xi in range(XI):
                    for c in range(F):
                        dst[xi * C * F + c] = dst[xi * C * F + c] + src[xi * C * F + c]
            out = &dw[0, 0, k, g * F_total + p.co0]
            if out_row != NULL:
                _gradfilter_transform(p.m, dst, C * F, out_row, 3 * F, F, 1, F)
                for c in range(F):
                    for a in range(3):
                        for b in range(3):
                            out[a * d_a + b * d_b + c * d_c] = out_row[(a * 3 + b) * F + c]
            else:
                _gradfilter_transform(p.m, dst, C * F, out, d_a, d_b, d_c, F)
        free(out_row)


def filter_scratch_elements(Py_ssize_t m, Py_ssize_t C, Py_ssize_t F, Py_ssize_t chunk_tiles,
                            Py_ssize_t band_w):
    """Per-thread scratch (elements) of ``filter_gradient``: one chunk's V and Z, one tile and
    one band, padded."""
    cdef Py_ssize_t a = m + 2, xi = a * a
    cdef Py_ssize_t band = max(a * band_w * C, m * band_w * F)
    return (chunk_tiles * xi * (C + F) + xi * max(C, F) + band + 15) // 16 * 16 + 16
